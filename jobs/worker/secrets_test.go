package worker_test

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/eryx-dev/eryx/jobs"
	"github.com/eryx-dev/eryx/netgate"
)

// nameResolver points every name at loopback, so that "example.com" (the
// name httptest's certificate is valid for) and "other.test" reach the
// local servers.
type nameResolver struct{}

func (nameResolver) LookupNetIP(_ context.Context, network, host string) ([]netip.Addr, error) {
	if host == "example.com" || host == "other.test" {
		return []netip.Addr{netip.MustParseAddr("127.0.0.1")}, nil
	}
	return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
}

// recorder keeps every byte its servers received.
type recorder struct {
	mu  sync.Mutex
	got []string
}

func (r *recorder) add(s string) {
	r.mu.Lock()
	r.got = append(r.got, s)
	r.mu.Unlock()
}

func (r *recorder) all() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return strings.Join(r.got, "\n")
}

const (
	tokenValue   = "tok_VALUE_0123456789abcdefghijklmnopqrstuvwxyz" // 46 bytes: a same-length placeholder
	tlsOnlyValue = "tls-only-value-987"
)

// TestSecrets attacks the secrets: the code uses placeholders; only bound
// hosts get values; nothing the job publishes, nor anything the code can
// read back, holds a value.
func TestSecrets(t *testing.T) {
	rec := &recorder{}
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		rec.add(r.Host + " " + r.Header.Get("Authorization") + " " + r.Header.Get("X-Other") + " " + string(body))
		// Reflect what was received: a header dump, like httpbin's.
		_, _ = fmt.Fprintf(w, "auth=%s other=%s body=%s", r.Header.Get("Authorization"), r.Header.Get("X-Other"), body)
	})
	plain := httptest.NewServer(mux)
	defer plain.Close()
	tlsSrv := httptest.NewUnstartedServer(mux)
	tlsSrv.Config.ErrorLog = log.New(io.Discard, "", 0)
	tlsSrv.StartTLS()
	defer tlsSrv.Close()
	// Raw echo servers: one sends back every line it gets; the other takes
	// "<cut>|<payload>\n", sends payload[:cut], waits for the next line
	// and sends the rest, so that the gateway reads the reflection split
	// exactly there.
	echoPort := echoServer(t, rec, false)
	splitPort := echoServer(t, rec, true)
	port := func(u string) int {
		p, _ := url.Parse(u)
		n, _ := strconv.Atoi(p.Port())
		return n
	}
	httpPort, httpsPort := port(plain.URL), port(tlsSrv.URL)

	gw, err := netgate.NewGateway(netgate.Config{Resolver: nameResolver{}, Policy: netgate.Policy{
		AllowHosts: []string{"example.com", "other.test", "127.0.0.1"}, AllowPorts: []int{httpPort, httpsPort, echoPort, splitPort},
		AllowLoopback: true,
		ExtraCACerts:  pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: tlsSrv.Certificate().Raw}),
	}})
	if err != nil {
		t.Fatal(err)
	}
	secrets, err := netgate.NewSecrets([]netgate.SecretSpec{
		{Name: "TOKEN", Value: []byte(tokenValue), Hosts: []string{"example.com"}, Plaintext: true},
		{Name: "TLS_ONLY", Value: []byte(tlsOnlyValue), Hosts: []string{"example.com"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	nc := connect(t, startServer(t))
	cfg := testConfig("w1")
	cfg.Network, cfg.Secrets = gw, secrets
	startWorker(t, nc, cfg)
	c := newClient(t, nc)

	ports := strings.NewReplacer("{HTTP}", strconv.Itoa(httpPort), "{HTTPS}", strconv.Itoa(httpsPort),
		"{ECHO}", strconv.Itoa(echoPort), "{SPLIT}", strconv.Itoa(splitPort))
	const prelude = `
import base64, os, socket, ssl, urllib.request, eryx
T = os.environ["TOKEN"]
L = eryx.secret("TLS_ONLY")
def get(url, ctx=None, tail=""):
    req = urllib.request.Request(url, data=("body:" + T + tail).encode(), headers={"Authorization": "Bearer " + T, "X-Other": L})
    return urllib.request.urlopen(req, timeout=10, context=ctx).read().decode()
def echo(*pieces, size=7, port={ECHO}):
    s = socket.create_connection(("example.com", port), timeout=10)
    for p in pieces:
        s.sendall(p.encode())
    out = b""
    while not out.endswith(b"\n"):
        b = s.recv(size)
        if not b:
            break
        out += b
    s.close()
    return out.decode()
`
	tests := []struct {
		name string
		code string
		// server is what the servers must have received (by this test).
		server []string
		// notServer must not be among it.
		notServer []string
	}{
		{"bound host over TLS", "result = get('https://example.com:{HTTPS}/')",
			[]string{"Bearer " + tokenValue, tlsOnlyValue, "body:" + tokenValue}, nil},
		{"bound host over plain HTTP: only plaintext secrets", "result = get('http://example.com:{HTTP}/')",
			[]string{"Bearer " + tokenValue}, []string{tlsOnlyValue}},
		{"unbound host", "result = get('http://other.test:{HTTP}/')",
			[]string{"Bearer ERYX_SECRET_"}, []string{tokenValue, tlsOnlyValue}},
		{"bound host by address", "result = get('https://127.0.0.1:{HTTPS}/')",
			[]string{"Bearer ERYX_SECRET_"}, []string{tokenValue, tlsOnlyValue}},
		{"unverified TLS to a bound host", "result = get('https://example.com:{HTTPS}/', ssl._create_unverified_context())",
			[]string{"Bearer ERYX_SECRET_"}, []string{tokenValue, tlsOnlyValue}},
		{"body ending like a placeholder", "result = get('http://example.com:{HTTP}/', tail=' ERYX_SECRET_0')",
			[]string{"body:" + tokenValue + " ERYX_SECRET_0"}, nil},
		{"echo", "result = echo('x ' + T + '\\n')", []string{"echo x " + tokenValue}, nil},
		{"placeholder split across sends", "result = echo('y ' + T[:5], T[5:30], T[30:] + '\\n')", []string{"echo y " + tokenValue}, nil},
		{"encoded placeholder goes out as it is", "result = echo(base64.b64encode(T.encode()).decode() + '\\n')",
			nil, []string{base64.StdEncoding.EncodeToString([]byte(tokenValue))}},
		{"placeholder split byte by byte", "result = echo(*('z ' + T + '\\n'))", []string{"echo z " + tokenValue}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := len(rec.all())
			res := runJob(t, c, &jobs.Job{Code: ports.Replace(prelude + tt.code), Secrets: []string{"TOKEN", "TLS_ONLY"}}, jobs.Handlers{})
			if res.Status != jobs.StatusOK {
				t.Fatalf("%s: %+v\n%s", res.Status, res.Error, res.Stderr)
			}
			got := rec.all()[before:]
			for _, want := range tt.server {
				if !strings.Contains(got, want) {
					t.Errorf("servers got %q, want %q in it", got, want)
				}
			}
			for _, not := range tt.notServer {
				if strings.Contains(got, not) {
					t.Errorf("servers got %q, with %q in it", got, not)
				}
			}
			// The code read back what the servers reflected: never a value.
			doc, _ := json.Marshal(res)
			for _, v := range []string{tokenValue, tlsOnlyValue, tokenValue[:8], tlsOnlyValue[:8]} {
				if strings.Contains(string(doc), v) {
					t.Fatalf("result document holds %q: %s", v, doc)
				}
			}
		})
	}

	t.Run("reflection reaches the code masked", func(t *testing.T) {
		code := prelude + `
r = get('https://example.com:{HTTPS}/')
e = echo(T + '\n')
# The reflection split at every point of the value: at most 3 bytes of it
# may show, and only its first ones.
def split_echo(cut):
    s = socket.create_connection(("example.com", {SPLIT}), timeout=10)
    s.sendall(f"{cut}|x{T}\n".encode())
    out = b""
    while len(out) < cut:
        out += s.recv(100)
    s.sendall(b"go\n")
    while not out.endswith(b"\n"):
        out += s.recv(100)
    s.close()
    return out.decode()
pieces = [split_echo(cut) for cut in [*range(1, 12), 20, 30, 40, len(T), len(T) + 1]]
shown = max(max((i for i in range(1, 10) if "x" + "tok_VALUE"[:i] in p), default=0) for p in pieces)
print(shown)
result = {"at_most_3_bytes": shown <= 3 and all(len(p) == len(T) + 2 for p in pieces),"reflected_is_placeholder": ("Bearer " + T) in r, "echo_is_placeholder": e == T + "\n",
          "value_seen": "tok_VALUE" in r + e}
`
		res := runJob(t, c, &jobs.Job{Code: ports.Replace(code), Secrets: []string{"TOKEN", "TLS_ONLY"}}, jobs.Handlers{})
		if string(res.Result) != `{"at_most_3_bytes":true,"reflected_is_placeholder":true,"echo_is_placeholder":true,"value_seen":false}` {
			t.Fatalf("%s %s %+v %s", res.Status, res.Result, res.Error, res.Stdout)
		}
		if res.Stdout != "3\n" { // the split tail of 3 bytes passed, no more
			t.Fatalf("up to %s bytes of the value showed", res.Stdout)
		}
	})

	t.Run("output and result are redacted", func(t *testing.T) {
		out := newOutput()
		code := "import os, eryx, sys\nprint(os.environ['TOKEN'])\nprint(eryx.secret('TOKEN'), file=sys.stderr)\nresult = [os.environ['TOKEN']]\nraise ValueError(os.environ['TOKEN'])"
		res := runJob(t, c, &jobs.Job{Code: code, Secrets: []string{"TOKEN"}}, out.handlers())
		stdout, stderr := out.String()
		if res.Stdout != "[REDACTED:TOKEN]\n" || stdout != res.Stdout || !strings.Contains(stderr, "[REDACTED:TOKEN]") ||
			string(res.Result) != `["[REDACTED:TOKEN]"]` || res.Error == nil || res.Error.Message != "[REDACTED:TOKEN]" {
			t.Fatalf("stdout %q (events %q), stderr %q, result %s, error %+v", res.Stdout, stdout, stderr, res.Result, res.Error)
		}
	})

	t.Run("placeholders are per job and only for asked secrets", func(t *testing.T) {
		code := "import os, eryx\ntry:\n    eryx.secret('TLS_ONLY')\n    asked = True\nexcept KeyError:\n    asked = False\nresult = [os.environ['TOKEN'][:12], len(os.environ['TOKEN']), 'TLS_ONLY' in os.environ, asked]"
		res := runJob(t, c, &jobs.Job{Code: code, Secrets: []string{"TOKEN"}}, jobs.Handlers{})
		if string(res.Result) != fmt.Sprintf(`["ERYX_SECRET_",%d,false,false]`, len(tokenValue)) {
			t.Fatalf("%s %s %+v", res.Status, res.Result, res.Error)
		}
	})

	t.Run("unknown secret is rejected", func(t *testing.T) {
		res := runJob(t, c, &jobs.Job{Code: "print(1)", Secrets: []string{"NOPE"}}, jobs.Handlers{})
		if res.Status != jobs.StatusRejected || res.Code != jobs.CodeUnknownSecret {
			t.Fatalf("%s/%s %s", res.Status, res.Code, res.Reason)
		}
	})
}

// echoServer serves lines back; split ones as described in TestSecrets.
func echoServer(t *testing.T, rec *recorder, split bool) int {
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
			go func() {
				defer func() { _ = c.Close() }()
				r := bufio.NewReader(c)
				for {
					line, err := r.ReadString('\n')
					if line != "" {
						rec.add("echo " + line)
						cutText, payload, ok := strings.Cut(line, "|")
						cut, _ := strconv.Atoi(cutText)
						if !split || !ok || cut > len(payload) {
							_, _ = c.Write([]byte(line))
						} else {
							_, _ = c.Write([]byte(payload[:cut]))
							if _, err := r.ReadString('\n'); err != nil {
								return
							}
							_, _ = c.Write([]byte(payload[cut:]))
						}
					}
					if err != nil {
						return
					}
				}
			}()
		}
	}()
	return ln.Addr().(*net.TCPAddr).Port
}
