package sandbox_test

import (
	"context"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"io/fs"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	"github.com/eryx-dev/eryx/internal/check"
	"github.com/eryx-dev/eryx/netgate"
	"github.com/eryx-dev/eryx/runtime/sandbox"
)

// These tests run Python in real sandboxes against real servers on
// 127.0.0.1, through a netgate gateway. Names resolve through mapResolver,
// so a test can point "api.test" at loopback without touching /etc/hosts.

// mapResolver maps names to addresses.
type mapResolver map[string][]netip.Addr

func (m mapResolver) LookupNetIP(_ context.Context, network, host string) ([]netip.Addr, error) {
	var out []netip.Addr
	for _, a := range m[host] {
		if network == "ip" || network == "ip4" && a.Is4() || network == "ip6" && a.Is6() {
			out = append(out, a)
		}
	}
	if len(out) == 0 {
		return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
	}
	return out, nil
}

var loopback = []netip.Addr{netip.MustParseAddr("127.0.0.1")}

// netServers are an HTTP and an HTTPS server (with httptest's CA, whose
// certificate is valid for example.com and 127.0.0.1).
type netServers struct {
	http, https         *httptest.Server
	httpPort, httpsPort int
	caPEM               []byte
}

func startServers(t *testing.T) *netServers {
	t.Helper()
	mux := http.NewServeMux()
	mux.HandleFunc("/hello", func(w http.ResponseWriter, r *http.Request) {
		_, _ = fmt.Fprintf(w, "hello from %s", r.Host)
	})
	mux.HandleFunc("/big", func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte(strings.Repeat("x", 10000)))
	})
	mux.HandleFunc("/echo", func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		_, _ = fmt.Fprintf(w, "%d bytes", len(b))
	})
	s := &netServers{http: httptest.NewServer(mux), https: httptest.NewUnstartedServer(mux)}
	// Refused handshakes are the point of some tests: keep them out of the log.
	s.https.Config.ErrorLog = log.New(io.Discard, "", 0)
	s.https.StartTLS()
	t.Cleanup(s.http.Close)
	t.Cleanup(s.https.Close)
	s.httpPort, s.httpsPort = serverPort(t, s.http), serverPort(t, s.https)
	s.caPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.https.Certificate().Raw})
	return s
}

// ports puts the servers' ports in place of {HTTP} and {HTTPS}.
func (s *netServers) ports(code string) string {
	return strings.NewReplacer("{HTTP}", strconv.Itoa(s.httpPort), "{HTTPS}", strconv.Itoa(s.httpsPort)).Replace(code)
}

func serverPort(t *testing.T, s *httptest.Server) int {
	u, err := url.Parse(s.URL)
	if err != nil {
		t.Fatal(err)
	}
	p, _ := strconv.Atoi(u.Port())
	return p
}

// devPolicy reaches the test servers: the loopback opt-in and an
// allow-list naming them.
func (s *netServers) devPolicy() netgate.Policy {
	return netgate.Policy{
		AllowHosts:    []string{"api.test", "example.com", "wrong.test"},
		AllowPorts:    []int{s.httpPort, s.httpsPort},
		AllowLoopback: true,
		ExtraCACerts:  s.caPEM,
		IOTimeout:     5 * time.Second,
	}
}

func testResolver() mapResolver {
	return mapResolver{"api.test": loopback, "example.com": loopback, "wrong.test": loopback, "other.test": loopback}
}

// refusals records a gateway's OnRefusal calls.
type refusals struct {
	mu      sync.Mutex
	reasons []string
}

func (r *refusals) add(reason, host string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.reasons = append(r.reasons, reason)
}

func (r *refusals) list() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.reasons...)
}

func newGateway(t *testing.T, p netgate.Policy, rec *refusals) *netgate.Gateway {
	t.Helper()
	cfg := netgate.Config{Policy: p, Resolver: testResolver()}
	if rec != nil {
		cfg.OnRefusal = rec.add
	}
	gw, err := netgate.NewGateway(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return gw
}

// runNet runs code with a fresh session of gw and returns `result`
// decoded into a map, failing the test when the code raised.
func runNet(t *testing.T, gw *netgate.Gateway, req netgate.Request, code string, extra ...func(*sandbox.ExecOptions)) map[string]any {
	t.Helper()
	sess := gw.NewSession(req)
	defer sess.Close()
	opts := sandbox.ExecOptions{Host: sess, Network: sess.GuestOptions()}
	for _, f := range extra {
		f(&opts)
	}
	res := run(t, code, opts)
	if res.Status != sandbox.StatusOK {
		t.Fatalf("status %s: %+v\nstdout: %s\nstderr: %s", res.Status, res.Error, res.Stdout, res.Stderr)
	}
	out := map[string]any{}
	if err := json.Unmarshal(res.Value, &out); err != nil {
		t.Fatalf("result %s (%s): %v", res.Value, res.ValueError, err)
	}
	return out
}

// pyCatch wraps a Python expression so that result[key] holds either its
// value or "ExceptionType: message".
const pyCatch = `
def catch(fn):
    try:
        return fn()
    except BaseException as e:
        return f"{type(e).__name__}: {e}"
`

func TestNetworkReachesLocalServersWithDevOptIn(t *testing.T) {
	t.Parallel()
	s := startServers(t)
	gw := newGateway(t, s.devPolicy(), nil)
	code := fmt.Sprintf(`
import http.client, json, socket, ssl, urllib.request
HTTP, HTTPS = %d, %d
result = {}
result["urllib_http"] = urllib.request.urlopen(f"http://api.test:{HTTP}/hello", timeout=5).read().decode()
result["urllib_https"] = urllib.request.urlopen(f"https://example.com:{HTTPS}/hello", timeout=5).read().decode()

conn = http.client.HTTPSConnection("example.com", HTTPS, timeout=5)
conn.request("POST", "/echo", body=b"y" * 200000)
resp = conn.getresponse()
result["https_post"] = [resp.status, resp.read().decode()]
result["tls_version"] = conn.sock.version()
conn.close()

with socket.create_connection(("api.test", HTTP), timeout=5) as s:
    s.sendall(b"GET /hello HTTP/1.0\r\nHost: raw\r\n\r\n")
    chunks = []
    while True:
        b = s.recv(7)
        if not b:
            break
        chunks.append(b)
    result["raw"] = b"".join(chunks).decode().split("\r\n")[-1]
    result["peer"] = list(s.getpeername())

ctx = ssl.create_default_context()
with socket.create_connection(("example.com", HTTPS)) as raw:
    with ctx.wrap_socket(raw, server_hostname="example.com") as tls:
        cert = tls.getpeercert()
        result["san"] = [list(x) for x in cert["subjectAltName"]]
        result["cipher_bits"] = tls.cipher()[2]
        tls.sendall(b"GET /hello HTTP/1.1\r\nHost: tls\r\nConnection: close\r\n\r\n")
        f = tls.makefile("rb")
        result["status_line"] = f.readline().decode().strip()
        f.close()

result["getaddrinfo"] = [ai[4][0] for ai in socket.getaddrinfo("api.test", HTTP, type=socket.SOCK_STREAM)]
result["gethostbyname"] = socket.gethostbyname("example.com")
# The stdlib's loop (resolve first, then connect to the address) works
# too: the host remembers which allowed name the address came from.
sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
sock.connect(socket.getaddrinfo("api.test", HTTP)[0][4])
sock.close()
result["connect_by_address"] = "ok"
`, s.httpPort, s.httpsPort)
	out := runNet(t, gw, netgate.Request{}, code)
	want := map[string]any{
		"urllib_http":        fmt.Sprintf("hello from api.test:%d", s.httpPort),
		"urllib_https":       fmt.Sprintf("hello from example.com:%d", s.httpsPort),
		"raw":                "hello from raw",
		"status_line":        "HTTP/1.1 200 OK",
		"tls_version":        "TLSv1.3",
		"gethostbyname":      "127.0.0.1",
		"connect_by_address": "ok",
	}
	for k, v := range want {
		if out[k] != v {
			t.Errorf("%s = %v, want %v", k, out[k], v)
		}
	}
	if got := fmt.Sprint(out["https_post"]); got != "[200 200000 bytes]" {
		t.Errorf("https_post = %s", got)
	}
	if got := fmt.Sprint(out["peer"]); got != fmt.Sprintf("[127.0.0.1 %d]", s.httpPort) {
		t.Errorf("peer = %s", got)
	}
	if got := fmt.Sprint(out["san"]); !strings.Contains(got, "[DNS example.com]") {
		t.Errorf("subjectAltName = %s", got)
	}
	if got := fmt.Sprint(out["getaddrinfo"]); got != "[127.0.0.1]" {
		t.Errorf("getaddrinfo = %s", got)
	}
}

func TestNetworkRefusals(t *testing.T) {
	t.Parallel()
	s := startServers(t)
	dev := s.devPolicy()
	noLoopback := dev
	noLoopback.AllowLoopback = false
	noLoopback.AllowHosts = []string{"api.test", "127.0.0.1", "*"}
	tests := []struct {
		name   string
		policy netgate.Policy
		code   string
		want   string
	}{
		// OnRefusal's kind is checked below from the message.
		{"off by default", netgate.Policy{},
			"urllib.request.urlopen('http://api.test:{HTTP}/hello')",
			"URLError: <urlopen error eryx network policy: networking is disabled for this execution (no host is allowed)>"},
		{"name resolving to loopback", noLoopback,
			"socket.create_connection(('api.test', {HTTP}))",
			"NetworkPolicyError: eryx network policy: host 'api.test' resolves to 127.0.0.1 (loopback), refused"},
		{"loopback literal", noLoopback,
			"socket.create_connection(('127.0.0.1', {HTTP}))",
			"NetworkPolicyError: eryx network policy: address 127.0.0.1 (loopback) is not reachable"},
		{"mapped loopback literal", noLoopback,
			"socket.create_connection(('::ffff:127.0.0.1', {HTTP}))",
			"IPv4-mapped 127.0.0.1, loopback"},
		{"cloud metadata", noLoopback,
			"socket.create_connection(('169.254.169.254', {HTTP}))",
			"169.254.169.254 (link-local)"},
		{"name not allowed", dev,
			"urllib.request.urlopen('http://other.test:{HTTP}/hello')",
			"URLError: <urlopen error eryx network policy: host 'other.test' is not in the allow-list>"},
		{"port not allowed", dev,
			"socket.create_connection(('api.test', 22))",
			"port 22 is not allowed for host 'api.test'"},
		{"getaddrinfo of a name not allowed", dev,
			"socket.getaddrinfo('other.test', 443)",
			"host 'other.test' is not in the allow-list"},
		{"partial label", netgate.Policy{AllowHosts: []string{"*.test"}, AllowPorts: dev.AllowPorts, AllowLoopback: true},
			"socket.create_connection(('evil-test', {HTTP}))",
			"host 'evil-test' is not in the allow-list"},
		{"TLS server name not allowed", dev,
			"ssl.create_default_context().wrap_socket(socket.create_connection(('api.test', {HTTPS})), server_hostname='other.test')",
			"TLS server name: host 'other.test' is not in the allow-list"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			rec := &refusals{}
			gw := newGateway(t, tt.policy, rec)
			code := pyCatch + "import socket, ssl, urllib.request\nresult = {'got': catch(lambda: " +
				s.ports(tt.code) + ")}\n" +
				"import _eryx_net\nresult['mro'] = [c.__name__ for c in _eryx_net.NetworkPolicyError.__mro__[:3]]"
			out := runNet(t, gw, netgate.Request{}, code)
			if got := fmt.Sprint(out["got"]); !strings.Contains(got, tt.want) {
				t.Errorf("Python saw %q, want it to contain %q", got, tt.want)
			}
			if got := fmt.Sprint(out["mro"]); got != "[NetworkPolicyError PermissionError OSError]" {
				t.Errorf("NetworkPolicyError MRO %s", got)
			}
			kind := netgate.KindNotAllowed
			switch {
			case strings.Contains(tt.want, "disabled"):
				kind = netgate.KindDisabled
			case strings.Contains(tt.want, "loopback") || strings.Contains(tt.want, "link-local"):
				kind = netgate.KindBlockedAddress
			}
			if got := rec.list(); len(got) != 1 || got[0] != kind {
				t.Errorf("OnRefusal kinds %q, want [%s]", got, kind)
			}
		})
	}
}

func TestNetworkWithoutGateway(t *testing.T) {
	t.Parallel()
	code := pyCatch + `
import http.client, socket, ssl, urllib.request
result = {
    "https_class": hasattr(http.client, "HTTPSConnection"),
    "context": catch(lambda: ssl.create_default_context()),
    "connect": catch(lambda: socket.create_connection(("127.0.0.1", 80), timeout=1)),
}
`
	res := run(t, code, sandbox.ExecOptions{})
	if res.Status != sandbox.StatusOK {
		t.Fatalf("%s: %+v", res.Status, res.Error)
	}
	var out map[string]any
	_ = json.Unmarshal(res.Value, &out)
	if out["https_class"] != true {
		t.Errorf("http.client has no HTTPSConnection: ssl did not import")
	}
	if got := fmt.Sprint(out["context"]); got != "NetworkPolicyError: eryx network policy: networking is off for this execution (no network gateway), so TLS is unavailable" {
		t.Errorf("context: %s", got)
	}
	if got := fmt.Sprint(out["connect"]); got != "NetworkPolicyError: eryx network policy: networking is off for this execution (no network gateway)" {
		t.Errorf("connect without a gateway: %s", got)
	}
}

// The sandbox has no other way to a socket, with or without the gateway.
func TestNetworkNoOtherSockets(t *testing.T) {
	t.Parallel()
	s := startServers(t)
	gw := newGateway(t, s.devPolicy(), nil)
	code := `
import _socket, socket, _eryx_net
def oserror(fn):
    try:
        fn()
    except OSError as e:
        return type(e).__name__
    return "no error"
result = {
    "raw _socket": oserror(lambda: _socket.socket(_socket.AF_INET, _socket.SOCK_STREAM)),
    "original class": oserror(lambda: _eryx_net._originals["socket"]()),
    "from fd": oserror(lambda: socket.socket(fileno=3)),
    "udp": oserror(lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM)),
    "bind": oserror(lambda: socket.socket().bind(("0.0.0.0", 8080))),
    "listen": oserror(lambda: socket.socket().listen()),
    "accept": oserror(lambda: socket.socket().accept()),
    "other family": oserror(lambda: socket.socket(99)),
}
`
	out := runNet(t, gw, netgate.Request{}, code)
	for k, v := range out {
		if v == "no error" {
			t.Errorf("%s: no OSError", k)
		}
	}
	if len(out) != 8 {
		t.Errorf("results: %v", out)
	}
}

func TestNetworkLimits(t *testing.T) {
	t.Parallel()
	s := startServers(t)
	tests := []struct {
		name  string
		tweak func(*netgate.Policy)
		code  string
		want  string
	}{
		{"connections", func(p *netgate.Policy) { p.MaxConnections = 2 },
			"[socket.create_connection(('api.test', {HTTP})) for _ in range(3)]",
			"NetworkLimitError: eryx network policy: connection limit reached: an execution may open at most 2 connections"},
		{"bytes in", func(p *netgate.Policy) { p.MaxBytesIn = 1000 },
			"urllib.request.urlopen('http://api.test:{HTTP}/big').read()",
			"NetworkLimitError: eryx network policy: receive limit reached: an execution may receive at most 1000 bytes"},
		{"bytes out", func(p *netgate.Policy) { p.MaxBytesOut = 100 },
			"socket.create_connection(('api.test', {HTTP})).sendall(b'x' * 1000)",
			"NetworkLimitError: eryx network policy: send limit reached: an execution may send at most 100 bytes (0 sent, 1000 more refused)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p := s.devPolicy()
			tt.tweak(&p)
			rec := &refusals{}
			gw := newGateway(t, p, rec)
			code := pyCatch + "import socket, urllib.request\nresult = {'got': catch(lambda: " + s.ports(tt.code) + ")}"
			out := runNet(t, gw, netgate.Request{}, code)
			if got := fmt.Sprint(out["got"]); !strings.Contains(got, tt.want) {
				t.Errorf("Python saw %q, want %q", got, tt.want)
			}
			if got := rec.list(); len(got) != 1 || got[0] != netgate.KindLimit {
				t.Errorf("OnRefusal kinds %q, want [limit]", got)
			}
		})
	}
}

// serveOnce starts a TCP server on 127.0.0.1 that runs fn on each
// connection, and returns its port.
func serveTCP(t *testing.T, fn func(net.Conn)) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { fn(c); _ = c.Close() }()
		}
	}()
	return ln.Addr().(*net.TCPAddr).Port
}

// A stream exactly as long as the receive cap reads to its end; one byte
// more is refused.
func TestNetworkReceiveCapIsExact(t *testing.T) {
	t.Parallel()
	port := serveTCP(t, func(c net.Conn) { _, _ = c.Write([]byte(strings.Repeat("z", 5000))) })
	code := fmt.Sprintf(`
import socket
s = socket.create_connection(("api.test", %d))
n = 0
while b := s.recv(1000):
    n += len(b)
result = {"n": n}
`, port)
	for _, tt := range []struct {
		cap    int64
		status sandbox.Status
	}{{5000, sandbox.StatusOK}, {4999, sandbox.StatusError}} {
		gw := newGateway(t, netgate.Policy{AllowHosts: []string{"api.test"}, AllowPorts: []int{port},
			AllowLoopback: true, MaxBytesIn: tt.cap}, nil)
		sess := gw.NewSession(netgate.Request{})
		res := run(t, code, sandbox.ExecOptions{Host: sess, Network: sess.GuestOptions()})
		sess.Close()
		if res.Status != tt.status {
			t.Fatalf("cap %d: %s %+v", tt.cap, res.Status, res.Error)
		}
		if tt.status == sandbox.StatusError && !strings.Contains(res.Error.Message, "receive limit reached") {
			t.Errorf("cap %d: %+v", tt.cap, res.Error)
		}
		if st := sess.Stats(); st.BytesIn != tt.cap {
			t.Errorf("cap %d: BytesIn = %d", tt.cap, st.BytesIn)
		}
	}
}

func TestNetworkTimeouts(t *testing.T) {
	t.Parallel()
	// A server that accepts and then says nothing.
	port := serveTCP(t, func(c net.Conn) { _, _ = io.Copy(io.Discard, c) })
	gw := newGateway(t, netgate.Policy{AllowHosts: []string{"api.test"}, AllowPorts: []int{port},
		AllowLoopback: true, IOTimeout: time.Second}, nil)
	code := pyCatch + fmt.Sprintf(`
import socket, time, urllib.request
def timed(fn):
    t0 = time.monotonic()
    return [catch(fn), round(time.monotonic() - t0, 2)]
s = socket.create_connection(("api.test", %[1]d))
result = {"policy": timed(lambda: s.recv(10))}
s.settimeout(0.1)
result["guest"] = timed(lambda: s.recv(10))
result["is_timeout"] = catch(lambda: s.recv(10)).startswith("TimeoutError")
result["urllib"] = timed(lambda: urllib.request.urlopen("http://api.test:%[1]d/", timeout=0.2))
s.setblocking(False)
result["nonblocking"] = catch(lambda: s.recv(10))
`, port)
	out := runNet(t, gw, netgate.Request{}, code)
	check := func(key, want string, lo, hi float64) {
		v, _ := out[key].([]any)
		if len(v) != 2 {
			t.Fatalf("%s: %v", key, out[key])
		}
		if got := fmt.Sprint(v[0]); !strings.Contains(got, want) {
			t.Errorf("%s raised %q, want %q", key, got, want)
		}
		if d, _ := v[1].(float64); d < lo || d > hi {
			t.Errorf("%s took %.2fs, want %.2f..%.2f", key, d, lo, hi)
		}
	}
	check("policy", "TimeoutError: timed out (recv: nothing for 1s)", 0.95, 3)
	check("guest", "TimeoutError", 0.09, 0.9)
	check("urllib", "timed out", 0.15, 0.9)
	if out["is_timeout"] != true {
		t.Errorf("socket.timeout is not TimeoutError")
	}
	if got := fmt.Sprint(out["nonblocking"]); !strings.HasPrefix(got, "BlockingIOError") {
		t.Errorf("non-blocking recv: %s", got)
	}
}

func TestNetworkTLSVerification(t *testing.T) {
	t.Parallel()
	s := startServers(t)
	trusted := newGateway(t, s.devPolicy(), nil)
	untrustedPolicy := s.devPolicy()
	untrustedPolicy.ExtraCACerts = nil
	untrusted := newGateway(t, untrustedPolicy, nil)

	code := pyCatch + fmt.Sprintf(`
import http.client, socket, ssl, urllib.request
PORT = %d
CA = %q
def fetch(host, ctx=None):
    c = http.client.HTTPSConnection(host, PORT, timeout=5, context=ctx)
    c.request("GET", "/hello")
    return c.getresponse().read().decode()
def classes(fn):
    try:
        fn()
    except ssl.SSLError as e:
        return [type(e).__name__, isinstance(e, ssl.SSLCertVerificationError), getattr(e, "verify_code", None), str(e)]
    return "no error"
unverified = ssl._create_unverified_context()
own_ca = ssl.create_default_context(cadata=CA)
result = {
    "good": catch(lambda: fetch("example.com")),
    "wrong_host": classes(lambda: fetch("wrong.test")),
    "urllib_wrong_host": catch(lambda: urllib.request.urlopen(f"https://wrong.test:{PORT}/hello")),
    "unverified": catch(lambda: fetch("wrong.test", unverified)),
    "own_ca": catch(lambda: fetch("example.com", own_ca)),
}
`, s.httpsPort, string(s.caPEM))
	out := runNet(t, trusted, netgate.Request{}, code)
	if got := fmt.Sprint(out["good"]); got != fmt.Sprintf("hello from example.com:%d", s.httpsPort) {
		t.Errorf("good: %s", got)
	}
	wrong, _ := out["wrong_host"].([]any)
	if len(wrong) != 4 || wrong[0] != "SSLCertVerificationError" || wrong[1] != true || wrong[2] != 62.0 ||
		!strings.Contains(fmt.Sprint(wrong[3]), "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: Hostname mismatch, certificate is not valid for 'wrong.test'.") {
		t.Errorf("wrong host: %v", out["wrong_host"])
	}
	if got := fmt.Sprint(out["urllib_wrong_host"]); !strings.Contains(got, "URLError") || !strings.Contains(got, "CERTIFICATE_VERIFY_FAILED") {
		t.Errorf("urllib wrong host: %s", got)
	}
	if got := fmt.Sprint(out["unverified"]); !strings.HasPrefix(got, "hello from wrong.test") {
		t.Errorf("CERT_NONE context: %s", got)
	}

	// Without the test CA the certificate is unknown, unless the code's
	// own context trusts it.
	out = runNet(t, untrusted, netgate.Request{}, code)
	bad, _ := out["wrong_host"].([]any)
	if got := fmt.Sprint(out["good"]); !strings.Contains(got, "SSLCertVerificationError") || !strings.Contains(got, "self-signed certificate") {
		t.Errorf("untrusted CA: %s", got)
	}
	if len(bad) != 4 || bad[0] != "SSLCertVerificationError" {
		t.Errorf("untrusted, wrong host: %v", out["wrong_host"])
	}
	if got := fmt.Sprint(out["own_ca"]); got != fmt.Sprintf("hello from example.com:%d", s.httpsPort) {
		t.Errorf("context with cadata: %s", got)
	}
}

// A job's request narrows the worker's policy and cannot widen it.
func TestNetworkJobCannotWiden(t *testing.T) {
	t.Parallel()
	s := startServers(t)
	ceiling := s.devPolicy()
	ceiling.AllowHosts = []string{"api.test"}
	gw := newGateway(t, ceiling, nil)
	code := pyCatch + fmt.Sprintf(`
import socket
result = {
    "api": catch(lambda: socket.create_connection(("api.test", %[1]d)) and "ok"),
    "other": catch(lambda: socket.create_connection(("other.test", %[1]d))),
}
`, s.httpPort)
	widen := netgate.Request{Allow: []string{"api.test", "other.test", "*"}, MaxConnections: 1000, AllowPorts: []int{s.httpPort, 22}}
	out := runNet(t, gw, widen, code)
	if out["api"] != "ok" || !strings.Contains(fmt.Sprint(out["other"]), "'other.test' is not in the allow-list") {
		t.Errorf("widening request: %v", out)
	}
	out = runNet(t, gw, netgate.Request{Allow: []string{}}, code)
	if !strings.Contains(fmt.Sprint(out["api"]), "networking is disabled") {
		t.Errorf("empty request: %v", out)
	}
}

func TestNetworkTraceEvents(t *testing.T) {
	t.Parallel()
	s := startServers(t)
	gw := newGateway(t, s.devPolicy(), nil)
	var mu sync.Mutex
	var events []sandbox.TraceEvent
	onTrace := func(ev sandbox.TraceEvent) {
		mu.Lock()
		defer mu.Unlock()
		if ev.Kind == "network_refused" {
			events = append(events, ev)
		}
	}
	code := "import socket\ntry:\n    socket.create_connection(('other.test', 80))\nexcept PermissionError:\n    pass\nresult = {}\n"
	runNet(t, gw, netgate.Request{}, code, func(o *sandbox.ExecOptions) { o.OnTrace = onTrace })
	mu.Lock()
	defer mu.Unlock()
	if len(events) != 1 {
		t.Fatalf("network_refused events: %+v", events)
	}
	ev := events[0]
	if ev.Callback != "other.test" || ev.Line != 3 || ev.Error == nil || ev.Error.Type != "NetworkPolicyError" ||
		!strings.Contains(ev.Error.Message, "not in the allow-list") {
		t.Errorf("event %+v (error %+v)", ev, ev.Error)
	}
}

// A pure-Python HTTP client, installed as a package, works over the shims.
func TestNetworkPackagedHTTPLibrary(t *testing.T) {
	t.Parallel()
	s := startServers(t)
	gw := newGateway(t, s.devPolicy(), nil)
	// tinyhttp is written for this test: plain socket and ssl, its own
	// request writing and response parsing, no http.client.
	pkg, err := sandbox.PackageFromFS("tinyhttp", fstest.MapFS{
		"tinyhttp/__init__.py": {Data: []byte(`"""A very small HTTP/1.1 client."""
import socket
import ssl
from urllib.parse import urlsplit


class Response:
    def __init__(self, status, headers, body):
        self.status, self.headers, self.body = status, headers, body


def get(url, timeout=10):
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    sock = socket.create_connection((parts.hostname, port), timeout=timeout)
    if parts.scheme == "https":
        sock = ssl.create_default_context().wrap_socket(sock, server_hostname=parts.hostname)
    with sock:
        request = f"GET {parts.path or '/'} HTTP/1.1\r\nHost: {parts.netloc}\r\nConnection: close\r\n\r\n"
        sock.sendall(request.encode("ascii"))
        data = b""
        while chunk := sock.recv(4096):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return Response(int(lines[0].split()[1]), headers, body)
`)},
	})
	if err != nil {
		t.Fatal(err)
	}
	code := fmt.Sprintf(`
import tinyhttp
r = tinyhttp.get("https://example.com:%d/hello")
p = tinyhttp.get("http://api.test:%d/hello")
result = {"https": [r.status, r.body.decode()], "http": p.body.decode()}
`, s.httpsPort, s.httpPort)
	out := runNet(t, gw, netgate.Request{}, code, func(o *sandbox.ExecOptions) { o.Packages = []*sandbox.Package{pkg} })
	if got := fmt.Sprint(out["https"]); got != fmt.Sprintf("[200 hello from example.com:%d]", s.httpsPort) {
		t.Errorf("https via package: %s", got)
	}
	if got := fmt.Sprint(out["http"]); got != fmt.Sprintf("hello from api.test:%d", s.httpPort) {
		t.Errorf("http via package: %s", got)
	}
}

// Sockets do not outlive their execution: a session's next execution sees
// them as closed, and the host has closed their connections.
func TestNetworkSocketsEndWithTheExecution(t *testing.T) {
	t.Parallel()
	s := startServers(t)
	gw := newGateway(t, s.devPolicy(), nil)
	sb, err := engine.NewSandbox(context.Background(), sandbox.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sb.Close(context.Background()) }()
	exec := func(code string) *sandbox.Result {
		sess := gw.NewSession(netgate.Request{})
		defer sess.Close()
		res, err := sb.Execute(context.Background(), code, sandbox.ExecOptions{Session: true, Host: sess, Network: sess.GuestOptions()})
		if err != nil || res.Status != sandbox.StatusOK {
			t.Fatalf("%v %s %+v", err, res.Status, res.Error)
		}
		return res
	}
	exec(fmt.Sprintf("import socket\nkept = socket.create_connection(('api.test', %d))", s.httpPort))
	res := exec(pyCatch + "result = catch(lambda: kept.send(b'x'))")
	if got := string(res.Value); !strings.Contains(got, "OSError") || !strings.Contains(got, "earlier execution") {
		t.Errorf("stale socket: %s", got)
	}
}

// A real third-party HTTP library, httplib2, from the machine's Debian
// python3-httplib2 when it is installed: it resolves with getaddrinfo,
// connects to the address, and loads its CA bundle from a file.
func TestNetworkSystemHTTPLibrary(t *testing.T) {
	t.Parallel()
	const root = "/usr/lib/python3/dist-packages/"
	files := fstest.MapFS{}
	for _, pkg := range []string{"httplib2", "pyparsing"} {
		err := fs.WalkDir(os.DirFS(root), pkg, func(p string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() || strings.Contains(p, "__pycache__") {
				return err
			}
			b, err := os.ReadFile(root + p)
			files[p] = &fstest.MapFile{Data: b}
			return err
		})
		check.Needs(t, err, "python3-httplib2")
	}
	pkg, err := sandbox.PackageFromFS("httplib2", files)
	if err != nil {
		t.Fatal(err)
	}
	s := startServers(t)
	gw := newGateway(t, s.devPolicy(), nil)
	code := fmt.Sprintf(`
import httplib2
with open("/tmp/ca.pem", "w") as f:
    f.write(%q)
h = httplib2.Http(ca_certs="/tmp/ca.pem", timeout=5)
r, body = h.request("https://example.com:%d/hello")
r2, body2 = h.request("http://api.test:%d/hello")
result = {"https": [r.status, body.decode()], "http": [r2.status, body2.decode()]}
`, string(s.caPEM), s.httpsPort, s.httpPort)
	out := runNet(t, gw, netgate.Request{}, code, func(o *sandbox.ExecOptions) { o.Packages = []*sandbox.Package{pkg} })
	if got := fmt.Sprint(out["https"]); got != fmt.Sprintf("[200 hello from example.com:%d]", s.httpsPort) {
		t.Errorf("https via httplib2: %s", got)
	}
	if got := fmt.Sprint(out["http"]); got != fmt.Sprintf("[200 hello from api.test:%d]", s.httpPort) {
		t.Errorf("http via httplib2: %s", got)
	}
}

// The socket module shows Python the constants of Linux, not WASI's
// (AF_INET 1, SOCK_STREAM 6): code passing numbers, as in
// socket.socket(2, 1), connects through the gateway, and the class looks
// like CPython's socket.socket. Every name is compared with native CPython.
func TestNetworkLinuxConstants(t *testing.T) {
	t.Parallel()
	s := startServers(t)
	gw := newGateway(t, s.devPolicy(), nil)
	const names = `NAMES = ["AF_INET", "AF_INET6", "AF_UNSPEC", "SOCK_STREAM", "SOCK_DGRAM", "SOCK_RAW", "SOCK_NONBLOCK",
    "SOCK_CLOEXEC", "IPPROTO_TCP", "IPPROTO_UDP", "IPPROTO_IP", "IPPROTO_IPV6", "SOL_SOCKET", "SO_REUSEADDR",
    "SO_KEEPALIVE", "SO_TYPE", "SO_ERROR", "SO_RCVBUF", "SO_SNDBUF", "TCP_NODELAY", "TCP_KEEPIDLE", "MSG_PEEK",
    "MSG_DONTWAIT", "MSG_WAITALL", "SHUT_RD", "SHUT_WR", "SHUT_RDWR", "AI_PASSIVE", "AI_CANONNAME",
    "AI_NUMERICHOST", "AI_ADDRCONFIG", "EAI_NONAME", "EAI_AGAIN", "NI_NUMERICHOST", "IPV6_V6ONLY", "IP_TTL",
    "SOMAXCONN", "INADDR_ANY", "INADDR_LOOPBACK"]
import socket
consts = {n: [int(getattr(socket, n)), repr(getattr(socket, n))] for n in NAMES}
`
	python, err := exec.LookPath("/usr/bin/python3.11")
	if err != nil {
		t.Fatalf("the native CPython the build uses is needed to compare with: %v", err)
	}
	native, err := exec.Command(python, "-c", names+"import json\nprint(json.dumps(consts))").Output()
	if err != nil {
		t.Fatalf("native python: %v", err)
	}
	code := s.ports(names + `
import errno, _socket
result = {"consts": consts}
with socket.socket(2, 1) as sock:
    sock.settimeout(5)
    result["repr_unconnected"] = repr(sock)
    sock.connect(("api.test", {HTTP}))
    result["family"] = [int(sock.family), repr(sock.family), int(sock.type), repr(sock.type)]
    result["so_type"] = sock.getsockopt(socket.SOL_SOCKET, socket.SO_TYPE)
    sock.sendall(b"GET /hello HTTP/1.0\r\nHost: numbers\r\n\r\n")
    result["reply"] = sock.makefile("rb").read().decode().split("\r\n")[-1]
    result["repr_connected"] = repr(sock)
result["repr_closed"] = repr(sock)
result["class"] = [socket.socket.__module__, socket.socket.__qualname__, type(sock).__name__]
ai = socket.getaddrinfo("api.test", {HTTP}, socket.AF_INET, socket.SOCK_STREAM)[0]
result["getaddrinfo"] = [int(ai[0]), int(ai[1]), ai[2]]
with socket.socket(ai[0], ai[1], ai[2]) as s2:
    s2.connect(ai[4])
    result["connect_getaddrinfo"] = "ok"
result["inet_pton"] = [socket.inet_pton(socket.AF_INET, "127.0.0.1").hex(), socket.inet_ntop(10, socket.inet_pton(10, "::1"))]
result["no_wasi_names"] = [n for n in ("AI_DEFAULT", "AI_MASK", "EAI_MAX", "AF_UNIX") if hasattr(socket, n)]
try:
    socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
except OSError as e:
    result["udp"] = errno.errorcode[e.errno]
`)
	out := runNet(t, gw, netgate.Request{}, code)
	var want map[string]any
	if err := json.Unmarshal(native, &want); err != nil {
		t.Fatalf("native output %s: %v", native, err)
	}
	if got := out["consts"].(map[string]any); fmt.Sprint(got) != fmt.Sprint(want) {
		for k, v := range want {
			if fmt.Sprint(got[k]) != fmt.Sprint(v) {
				t.Errorf("socket.%s = %v, Linux has %v", k, got[k], v)
			}
		}
	}
	peer := fmt.Sprintf("('127.0.0.1', %d)", s.httpPort)
	checks := map[string]string{
		"repr_unconnected":    "<socket.socket fd=-1, family=2, type=1, proto=0>",
		"repr_connected":      "<socket.socket fd=-1, family=2, type=1, proto=0, raddr=" + peer + ">",
		"repr_closed":         "<socket.socket [closed] fd=-1, family=2, type=1, proto=0>",
		"family":              "[2 <AddressFamily.AF_INET: 2> 1 <SocketKind.SOCK_STREAM: 1>]",
		"so_type":             "1",
		"reply":               "hello from numbers",
		"class":               "[socket socket socket]",
		"getaddrinfo":         "[2 1 6]",
		"connect_getaddrinfo": "ok",
		"inet_pton":           "[7f000001 ::1]",
		"no_wasi_names":       "[]",
		"udp":                 "EAFNOSUPPORT",
	}
	for k, v := range checks {
		if got := fmt.Sprint(out[k]); got != v {
			t.Errorf("%s = %s, want %s", k, got, v)
		}
	}
}
