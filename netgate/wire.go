package netgate

import (
	"fmt"

	"github.com/eryx-dev/eryx/runtime/sandbox"
)

// Operations of the guest's network shims (runtime/guest/_eryx_net.py);
// keep the two in sync. Payloads and replies are JSON; bytes travel as
// base64 strings (encoding/json's []byte form).
const (
	OpResolve  = "net.resolve"  // resolveReq -> resolveReply
	OpConnect  = "net.connect"  // connectReq -> connectReply
	OpStartTLS = "net.starttls" // startTLSReq -> tlsInfo
	OpSend     = "net.send"     // sendReq -> sendReply
	OpRecv     = "net.recv"     // recvReq -> recvReply
	OpShutdown = "net.shutdown" // shutdownReq -> null
	OpClose    = "net.close"    // closeReq -> null
)

// Size bounds of one operation.
const (
	// MaxChunk bounds the data of one send or receive.
	MaxChunk = 64 << 10
	// maxCAData bounds the extra CA bundle a guest context may pass (a
	// certifi bundle is about 300 KiB).
	maxCAData = 1 << 20
	// maxPayload bounds one request document.
	maxPayload = maxCAData + 8<<10
)

// Error types the shims turn into Python exceptions. None is a builtin
// name known to the sandbox runtime, so each reaches the shim as
// eryx.CallbackError carrying the type, and the shim raises the right
// socket or ssl exception.
const (
	errPolicy       = "NetworkPolicyError"           // PermissionError subclass
	errLimit        = "NetworkLimitError"            // NetworkPolicyError subclass
	errTimeout      = "socket.timeout"               // TimeoutError
	errWouldBlock   = "BlockingIOError"              // non-blocking socket, no data yet
	errGAI          = "socket.gaierror"              // name resolution failed
	errRefused      = "ConnectionRefusedError"       //
	errReset        = "ConnectionResetError"         //
	errAborted      = "ConnectionAbortedError"       //
	errBrokenPipe   = "BrokenPipeError"              //
	errUnreachable  = "NetUnreachable"               // OSError(ENETUNREACH / EHOSTUNREACH)
	errBadConn      = "NetBadConnection"             // OSError(EBADF): unknown or closed connection
	errNet          = "NetError"                     // any other OSError
	errSSL          = "ssl.SSLError"                 //
	errSSLVerify    = "ssl.SSLCertVerificationError" //
	errSSLEOF       = "ssl.SSLEOFError"              // EOF in violation of the protocol
	errInvalidInput = "ValueError"                   // malformed request: a builtin on purpose
)

func guestError(typ, format string, args ...any) *sandbox.CallbackError {
	return &sandbox.CallbackError{Type: typ, Message: fmt.Sprintf(format, args...)}
}

// tlsParams configure a TLS client. The zero value verifies fully: the
// fields that weaken verification are opt-outs.
type tlsParams struct {
	ServerHostname string `json:"server_hostname"`
	// Insecure skips verification entirely (ssl.CERT_NONE).
	Insecure bool `json:"insecure"`
	// NoCheckHostname verifies the chain but not the name
	// (check_hostname = False).
	NoCheckHostname bool     `json:"no_check_hostname"`
	ALPN            []string `json:"alpn"`
	// CAData is PEM the context trusts besides the host's pool
	// (SSLContext.load_verify_locations).
	CAData     string `json:"cadata"`
	MinVersion uint16 `json:"min_version"` // ssl.TLSVersion values: 0x0303 is TLS 1.2
	MaxVersion uint16 `json:"max_version"`
}

type resolveReq struct {
	Host   string `json:"host"`
	Family int    `json:"family"` // 0 any, 4, 6
}

type resolveReply struct {
	Addresses []string `json:"addresses"`
}

type connectReq struct {
	Host    string     `json:"host"`
	Port    int        `json:"port"`
	Family  int        `json:"family"`
	Timeout *float64   `json:"timeout"` // seconds; null blocks (up to the policy's timeouts)
	TLS     *tlsParams `json:"tls"`     // handshake right after connecting
}

type connectReply struct {
	ID     int      `json:"id"`
	Peer   string   `json:"peer"`
	Port   int      `json:"port"`
	Family int      `json:"family"`
	TLS    *tlsInfo `json:"tls,omitempty"`
}

type startTLSReq struct {
	ID      int      `json:"id"`
	Timeout *float64 `json:"timeout"`
	tlsParams
}

// tlsInfo describes an established TLS session to the guest.
type tlsInfo struct {
	Version string    `json:"version"` // "TLSv1.3"
	Cipher  string    `json:"cipher"`
	Bits    int       `json:"bits"`
	ALPN    string    `json:"alpn,omitempty"`
	Cert    *peerCert `json:"cert,omitempty"` // only when verified, like Python
	CertDER []byte    `json:"cert_der,omitempty"`
}

type sendReq struct {
	ID      int      `json:"id"`
	Data    []byte   `json:"data"`
	Timeout *float64 `json:"timeout"`
}

type sendReply struct {
	Sent int `json:"sent"`
}

type recvReq struct {
	ID      int      `json:"id"`
	Max     int      `json:"max"`
	Timeout *float64 `json:"timeout"`
}

type recvReply struct {
	Data []byte `json:"data"` // empty at end of stream
}

type shutdownReq struct {
	ID  int `json:"id"`
	How int `json:"how"` // socket.SHUT_RD, SHUT_WR, SHUT_RDWR
}

type closeReq struct {
	ID int `json:"id"`
}

// GuestOptions is the configuration the shims receive (ExecOptions.Network).
type GuestOptions struct {
	// Enabled is false when the policy allows no host: the shims still
	// route everything to the gateway, which refuses with a clear reason.
	Enabled  bool `json:"enabled"`
	MaxChunk int  `json:"max_chunk"`
}
