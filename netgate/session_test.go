package netgate

import (
	"context"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eryx-dev/eryx/runtime/sandbox"
)

// seqResolver answers each name with the next of its answers (repeating
// the last), which is how a rebinding DNS server behaves.
type seqResolver struct {
	mu      sync.Mutex
	answers map[string][][]netip.Addr
	calls   map[string]int
}

func newSeqResolver(answers map[string][]string) *seqResolver {
	r := &seqResolver{answers: map[string][][]netip.Addr{}, calls: map[string]int{}}
	for name, seq := range answers {
		for _, ans := range seq {
			var addrs []netip.Addr
			for _, a := range strings.Fields(ans) {
				addrs = append(addrs, netip.MustParseAddr(a))
			}
			r.answers[name] = append(r.answers[name], addrs)
		}
	}
	return r
}

func (r *seqResolver) LookupNetIP(_ context.Context, _, host string) ([]netip.Addr, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	seq := r.answers[host]
	if len(seq) == 0 {
		return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
	}
	i := min(r.calls[host], len(seq)-1)
	r.calls[host]++
	return seq[i], nil
}

func (r *seqResolver) lookups(host string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.calls[host]
}

// echoServer echoes every connection on 127.0.0.1 and reports closes.
func echoServer(t *testing.T) (port int, closed <-chan struct{}) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	ch := make(chan struct{}, 16)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				_, _ = io.Copy(c, c)
				_ = c.Close()
				ch <- struct{}{}
			}()
		}
	}()
	return ln.Addr().(*net.TCPAddr).Port, ch
}

func testCAPEM(t *testing.T) string {
	t.Helper()
	srv := httptest.NewTLSServer(http.NotFoundHandler())
	defer srv.Close()
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}))
}

func newTestSession(t *testing.T, p Policy, r Resolver, onRefusal func(string, string)) *Session {
	t.Helper()
	gw, err := NewGateway(Config{Policy: p, Resolver: r, OnRefusal: onRefusal})
	if err != nil {
		t.Fatal(err)
	}
	s := gw.NewSession(Request{})
	t.Cleanup(s.Close)
	return s
}

// call runs one operation; a guest-visible error comes back as the
// CallbackError the shim would see.
func call(t *testing.T, ctx context.Context, s *Session, op string, req any) (map[string]any, *sandbox.CallbackError) {
	t.Helper()
	payload, ok := req.([]byte)
	if !ok {
		payload, _ = json.Marshal(req)
	}
	out, err := s.HostCall(ctx, op, payload)
	if err != nil {
		var ce *sandbox.CallbackError
		if !errors.As(err, &ce) {
			t.Fatalf("%s: untyped error %v", op, err)
		}
		return nil, ce
	}
	var m map[string]any
	if err := json.Unmarshal(out, &m); err != nil {
		t.Fatalf("%s reply %s: %v", op, out, err)
	}
	return m, nil
}

func mustCall(t *testing.T, ctx context.Context, s *Session, op string, req any) map[string]any {
	t.Helper()
	m, ce := call(t, ctx, s, op, req)
	if ce != nil {
		t.Fatalf("%s: %v", op, ce)
	}
	return m
}

func wantError(t *testing.T, ce *sandbox.CallbackError, typ, msg string) {
	t.Helper()
	if ce == nil {
		t.Fatalf("no error, want %s: %s", typ, msg)
	}
	if ce.Type != typ || !strings.Contains(ce.Message, msg) {
		t.Fatalf("got %s: %s; want %s containing %q", ce.Type, ce.Message, typ, msg)
	}
}

// The host connects only to addresses it checked: a name that rebinds to
// an internal address between lookups is refused at the second lookup,
// and an answer mixing allowed and blocked addresses is refused whole.
func TestSessionRebinding(t *testing.T) {
	port, _ := echoServer(t)
	res := newSeqResolver(map[string][]string{
		"rebind.test": {"127.0.0.1", "10.0.0.1"},
		"mixed.test":  {"127.0.0.1 169.254.169.254"},
	})
	s := newTestSession(t, Policy{AllowHosts: []string{"*.test"}, AllowPorts: []int{port}, AllowLoopback: true}, res, nil)
	ctx := context.Background()

	got := mustCall(t, ctx, s, OpResolve, resolveReq{Host: "rebind.test"})
	if a := got["addresses"].([]any); len(a) != 1 || a[0] != "127.0.0.1" {
		t.Fatalf("first answer %v", got)
	}
	_, ce := call(t, ctx, s, OpConnect, connectReq{Host: "rebind.test", Port: port})
	wantError(t, ce, errPolicy, "host 'rebind.test' resolves to 10.0.0.1 (private), refused")
	if n := res.lookups("rebind.test"); n != 2 {
		t.Errorf("%d lookups: connecting must resolve afresh", n)
	}
	// The address it checked the first time is still fine.
	mustCall(t, ctx, s, OpConnect, connectReq{Host: "127.0.0.1", Port: port})

	_, ce = call(t, ctx, s, OpConnect, connectReq{Host: "mixed.test", Port: port})
	wantError(t, ce, errPolicy, "resolves to 169.254.169.254 (link-local)")
	_, ce = call(t, ctx, s, OpResolve, resolveReq{Host: "mixed.test"})
	wantError(t, ce, errPolicy, "169.254.169.254 (link-local)")
	if st := s.Stats(); st.Connections != 1 || st.Refusals != 3 {
		t.Errorf("stats %+v", st)
	}
}

// An address literal is judged as the allowed name it was resolved from
// in this session, and only then.
func TestSessionAddressJudgedByResolvedName(t *testing.T) {
	port, _ := echoServer(t)
	res := newSeqResolver(map[string][]string{"api.test": {"127.0.0.1"}})
	s := newTestSession(t, Policy{AllowHosts: []string{"api.test"}, AllowPorts: []int{port}, AllowLoopback: true}, res, nil)
	ctx := context.Background()
	_, ce := call(t, ctx, s, OpConnect, connectReq{Host: "127.0.0.1", Port: port})
	wantError(t, ce, errPolicy, "host '127.0.0.1' is not in the allow-list")
	mustCall(t, ctx, s, OpResolve, resolveReq{Host: "api.test"})
	mustCall(t, ctx, s, OpConnect, connectReq{Host: "127.0.0.1", Port: port})
	_, ce = call(t, ctx, s, OpConnect, connectReq{Host: "127.0.0.1", Port: 22})
	wantError(t, ce, errPolicy, "port 22 is not allowed for host 'api.test'")
}

// The dialer's control hook refuses any address but the checked one, and
// re-applies the blocked ranges.
func TestSessionControlHook(t *testing.T) {
	s := newTestSession(t, Policy{AllowHosts: []string{"*"}, AllowLoopback: true}, newSeqResolver(nil), nil)
	want := netip.MustParseAddrPort("127.0.0.1:80")
	ctl := s.control(want)
	if err := ctl(context.Background(), "tcp4", "127.0.0.1:80", nil); err != nil {
		t.Errorf("checked address refused: %v", err)
	}
	for _, addr := range []string{"127.0.0.2:80", "127.0.0.1:81", "[::1]:80", "nonsense"} {
		if err := ctl(context.Background(), "tcp", addr, nil); !errors.Is(err, ErrBlockedAddress) {
			t.Errorf("control(%s) = %v, want ErrBlockedAddress", addr, err)
		}
	}
	strict := newTestSession(t, Policy{AllowHosts: []string{"*"}}, newSeqResolver(nil), nil)
	if err := strict.control(want)(context.Background(), "tcp4", "127.0.0.1:80", nil); !errors.Is(err, ErrBlockedAddress) {
		t.Errorf("loopback without the opt-in passed the hook: %v", err)
	}
}

func TestSessionProtocol(t *testing.T) {
	port, _ := echoServer(t)
	var refused []string
	s := newTestSession(t, Policy{AllowHosts: []string{"echo.test"}, AllowPorts: []int{port}, AllowLoopback: true, MaxBytesOut: 1 << 20},
		newSeqResolver(map[string][]string{"echo.test": {"127.0.0.1"}}),
		func(reason, host string) { refused = append(refused, host+": "+reason) })
	ctx := context.Background()

	c := mustCall(t, ctx, s, OpConnect, connectReq{Host: "Echo.Test.", Port: port})
	if c["peer"] != "127.0.0.1" || c["port"] != float64(port) || c["family"] != 4.0 {
		t.Fatalf("connect reply %v", c)
	}
	id := int(c["id"].(float64))
	sent := mustCall(t, ctx, s, OpSend, sendReq{ID: id, Data: []byte("hello, eryx")})
	if sent["sent"] != 11.0 {
		t.Fatalf("send reply %v", sent)
	}
	got := ""
	for len(got) < 11 {
		r := mustCall(t, ctx, s, OpRecv, recvReq{ID: id, Max: 5})
		var b []byte
		_ = json.Unmarshal([]byte(`"`+r["data"].(string)+`"`), &b)
		if len(b) == 0 || len(b) > 5 {
			t.Fatalf("recv of at most 5 gave %q", b)
		}
		got += string(b)
	}
	if got != "hello, eryx" {
		t.Errorf("echoed %q", got)
	}
	mustCall(t, ctx, s, OpShutdown, shutdownReq{ID: id, How: 1})
	if r := mustCall(t, ctx, s, OpRecv, recvReq{ID: id, Max: 5}); r["data"] != "" {
		t.Errorf("after SHUT_WR the echo server closes: %v", r)
	}
	mustCall(t, ctx, s, OpClose, closeReq{ID: id})
	mustCall(t, ctx, s, OpClose, closeReq{ID: id}) // closing twice is fine

	tests := []struct {
		op      string
		payload any
		typ     string
		msg     string
	}{
		{OpSend, sendReq{ID: id, Data: []byte("x")}, errBadConn, "connection 1 is closed"},
		{OpRecv, recvReq{ID: 99, Max: 1}, errBadConn, "connection 99 is closed"},
		{OpRecv, recvReq{ID: id, Max: 0}, errInvalidInput, "receive size must be positive"},
		{OpSend, sendReq{ID: id, Data: make([]byte, MaxChunk+1)}, errInvalidInput, "chunk limit"},
		{OpConnect, []byte(`{"host": 5}`), errInvalidInput, "malformed network request"},
		{OpConnect, make([]byte, maxPayload+1), errInvalidInput, "exceeds"},
		{"net.listen", []byte(`{}`), "NotImplementedError", `unknown network operation "net.listen"`},
		{OpShutdown, shutdownReq{ID: id, How: 1}, errBadConn, "is closed"},
		{OpConnect, connectReq{Host: "echo.test", Port: 1}, errPolicy, "port 1 is not allowed"},
		{OpConnect, connectReq{Host: "bad host", Port: port}, errPolicy, `invalid host name "bad host"`},
		{OpResolve, resolveReq{Host: "missing.test"}, errPolicy, "not in the allow-list"},
	}
	for _, tt := range tests {
		_, ce := call(t, ctx, s, tt.op, tt.payload)
		wantError(t, ce, tt.typ, tt.msg)
	}
	if len(refused) != 3 || refused[0] != "echo.test: not_allowed" || refused[1] != "bad host: not_allowed" {
		t.Errorf("OnRefusal calls %q", refused)
	}
}

func TestSessionConnectErrors(t *testing.T) {
	// A port nobody listens on: take one and free it.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedPort := ln.Addr().(*net.TCPAddr).Port
	_ = ln.Close()
	res := newSeqResolver(map[string][]string{"api.test": {"127.0.0.1"}})
	s := newTestSession(t, Policy{AllowHosts: []string{"api.test", "nxdomain.test"}, AllowPorts: []int{closedPort}, AllowLoopback: true}, res, nil)
	_, ce := call(t, context.Background(), s, OpConnect, connectReq{Host: "api.test", Port: closedPort})
	wantError(t, ce, errRefused, "refused")
	_, ce = call(t, context.Background(), s, OpConnect, connectReq{Host: "nxdomain.test", Port: closedPort})
	wantError(t, ce, errGAI, "cannot resolve 'nxdomain.test': no such host")
	_, ce = call(t, context.Background(), s, OpConnect, connectReq{Host: "api.test", Port: closedPort, Family: 6})
	wantError(t, ce, errGAI, "no IPv6 address")
}

func TestSessionLimits(t *testing.T) {
	port, _ := echoServer(t)
	res := newSeqResolver(map[string][]string{"echo.test": {"127.0.0.1"}})
	s := newTestSession(t, Policy{AllowHosts: []string{"echo.test"}, AllowPorts: []int{port}, AllowLoopback: true,
		MaxConnections: 1, MaxBytesOut: 10, MaxBytesIn: 4}, res, nil)
	ctx := context.Background()
	id := mustCall(t, ctx, s, OpConnect, connectReq{Host: "echo.test", Port: port})["id"]
	_, ce := call(t, ctx, s, OpConnect, connectReq{Host: "echo.test", Port: port})
	wantError(t, ce, errLimit, "connection limit reached: an execution may open at most 1 connections")
	mustCall(t, ctx, s, OpSend, map[string]any{"id": id, "data": []byte("0123456")})
	_, ce = call(t, ctx, s, OpSend, map[string]any{"id": id, "data": []byte("0123")})
	wantError(t, ce, errLimit, "send limit reached: an execution may send at most 10 bytes (7 sent, 4 more refused)")
	n := 0
	for n < 4 {
		r := mustCall(t, ctx, s, OpRecv, map[string]any{"id": id, "max": 100})
		var b []byte
		_ = json.Unmarshal([]byte(`"`+r["data"].(string)+`"`), &b)
		n += len(b)
	}
	_, ce = call(t, ctx, s, OpRecv, map[string]any{"id": id, "max": 100})
	wantError(t, ce, errLimit, "receive limit reached: an execution may receive at most 4 bytes")
	if st := s.Stats(); st.BytesIn != 4 || st.BytesOut != 7 || st.Connections != 1 || st.Refusals != 3 {
		t.Errorf("stats %+v", st)
	}
}

// Everything a session opened goes when the execution's context ends.
func TestSessionClosesWithTheExecution(t *testing.T) {
	port, closed := echoServer(t)
	res := newSeqResolver(map[string][]string{"echo.test": {"127.0.0.1"}})
	s := newTestSession(t, Policy{AllowHosts: []string{"echo.test"}, AllowPorts: []int{port}, AllowLoopback: true}, res, nil)
	ctx, cancel := context.WithCancel(context.Background())
	id := mustCall(t, ctx, s, OpConnect, connectReq{Host: "echo.test", Port: port})["id"]

	// A receive blocked on the silent connection returns when ctx ends.
	done := make(chan *sandbox.CallbackError)
	go func() {
		_, ce := call(t, ctx, s, OpRecv, map[string]any{"id": id, "max": 10})
		done <- ce
	}()
	// Before or after the receive blocks, the end of ctx ends it.
	cancel()
	select {
	case ce := <-done:
		if ce == nil || ce.Type != errBadConn {
			t.Errorf("blocked recv ended with %v", ce)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("blocked recv did not end with the context")
	}
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("the server never saw the connection close")
	}
	_, ce := call(t, context.Background(), s, OpConnect, connectReq{Host: "echo.test", Port: port})
	wantError(t, ce, errBadConn, "session is closed")
	s.Close()
	s.Close() // idempotent
}

func TestSessionTLSModes(t *testing.T) {
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.StartTLS()
	defer srv.Close()
	plain := httptest.NewServer(http.NotFoundHandler())
	defer plain.Close()
	tlsPort := srv.Listener.Addr().(*net.TCPAddr).Port
	plainPort := plain.Listener.Addr().(*net.TCPAddr).Port
	ca := []byte(testCAPEMOf(srv))
	res := newSeqResolver(map[string][]string{"example.com": {"127.0.0.1"}, "wrong.test": {"127.0.0.1"}})
	pol := Policy{AllowHosts: []string{"example.com", "wrong.test"}, AllowPorts: []int{tlsPort, plainPort}, AllowLoopback: true, ExtraCACerts: ca}
	s := newTestSession(t, pol, res, nil)
	ctx := context.Background()
	tlsTo := func(host string, port int, p tlsParams) (map[string]any, *sandbox.CallbackError) {
		return call(t, ctx, s, OpConnect, connectReq{Host: host, Port: port, TLS: &p})
	}

	ok, ce := tlsTo("example.com", tlsPort, tlsParams{ServerHostname: "example.com", ALPN: []string{"http/1.1"}})
	if ce != nil {
		t.Fatal(ce)
	}
	info := ok["tls"].(map[string]any)
	if info["version"] != "TLSv1.3" || info["alpn"] != "http/1.1" || info["cert"] == nil || info["cert_der"] == "" {
		t.Errorf("tls info %v", info)
	}
	cert := info["cert"].(map[string]any)
	if !strings.Contains(toJSON(cert["subjectAltName"]), `["DNS","example.com"]`) || !strings.Contains(toJSON(cert["notAfter"]), "GMT") {
		t.Errorf("cert %v", cert)
	}

	_, ce = tlsTo("wrong.test", tlsPort, tlsParams{ServerHostname: "wrong.test"})
	wantError(t, ce, errSSLVerify, "certificate verify failed: Hostname mismatch, certificate is not valid for 'wrong.test'.")
	if _, ce = tlsTo("wrong.test", tlsPort, tlsParams{ServerHostname: "wrong.test", NoCheckHostname: true}); ce != nil {
		t.Errorf("chain-only verification: %v", ce)
	}
	insecure, ce := tlsTo("wrong.test", tlsPort, tlsParams{Insecure: true})
	if ce != nil || insecure["tls"].(map[string]any)["cert"] != nil {
		t.Errorf("CERT_NONE: %v %v", insecure, ce)
	}
	_, ce = tlsTo("example.com", tlsPort, tlsParams{})
	wantError(t, ce, errInvalidInput, "check_hostname requires server_hostname")
	_, ce = tlsTo("example.com", tlsPort, tlsParams{ServerHostname: "example.com", MaxVersion: 0x0302})
	wantError(t, ce, errSSL, "only TLS 1.2 and 1.3")
	_, ce = tlsTo("example.com", plainPort, tlsParams{ServerHostname: "example.com"})
	wantError(t, ce, errSSL, "[SSL]")

	// Upgrading an open connection; a second upgrade is refused.
	c := mustCall(t, ctx, s, OpConnect, connectReq{Host: "example.com", Port: tlsPort})
	up := map[string]any{"id": c["id"], "server_hostname": "example.com"}
	if got := mustCall(t, ctx, s, OpStartTLS, up); got["version"] == nil {
		t.Errorf("starttls reply %v", got)
	}
	_, ce = call(t, ctx, s, OpStartTLS, up)
	wantError(t, ce, errSSL, "already uses TLS")

	// Without the extra CA the test certificate is unknown...
	bare := pol
	bare.ExtraCACerts = nil
	s2 := newTestSession(t, bare, res, nil)
	_, ce = call(t, ctx, s2, OpConnect, connectReq{Host: "example.com", Port: tlsPort, TLS: &tlsParams{ServerHostname: "example.com"}})
	wantError(t, ce, errSSLVerify, "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: self-signed certificate")
	// ...unless the guest's context brings it.
	_, ce = call(t, ctx, s2, OpConnect, connectReq{Host: "example.com", Port: tlsPort, TLS: &tlsParams{ServerHostname: "example.com", CAData: string(ca)}})
	if ce != nil {
		t.Errorf("cadata: %v", ce)
	}
}

func testCAPEMOf(srv *httptest.Server) string {
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}))
}

func toJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

func TestNewGatewayValidates(t *testing.T) {
	for _, p := range []Policy{
		{AllowHosts: []string{"a..b"}},
		{AllowPorts: []int{70000}},
		{MaxConnections: -1},
		{IOTimeout: -time.Second},
		{ExtraCACerts: []byte("not a certificate")},
	} {
		if _, err := NewGateway(Config{Policy: p}); !errors.Is(err, ErrInvalidPolicy) {
			t.Errorf("NewGateway(%+v): %v, want ErrInvalidPolicy", p, err)
		}
	}
	gw, err := NewGateway(Config{})
	if err != nil {
		t.Fatal(err)
	}
	s := gw.NewSession(Request{})
	var opts GuestOptions
	if err := json.Unmarshal(s.GuestOptions(), &opts); err != nil || opts.Enabled || opts.MaxChunk != MaxChunk {
		t.Errorf("guest options of a zero policy: %+v %v", opts, err)
	}
	_, ce := call(t, context.Background(), s, OpConnect, connectReq{Host: "example.com", Port: 443})
	wantError(t, ce, errPolicy, "eryx network policy: networking is disabled for this execution")
}
