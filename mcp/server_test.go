package mcp_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/nats-io/nats.go"

	"github.com/eryx-dev/eryx/callbacks/catalogue"
	"github.com/eryx-dev/eryx/internal/solo"
	"github.com/eryx-dev/eryx/internal/testenv"
	"github.com/eryx-dev/eryx/jobs"
	"github.com/eryx-dev/eryx/kvstate"
	"github.com/eryx-dev/eryx/mcp"
	"github.com/eryx-dev/eryx/runtime/sandbox"
)

var engine *sandbox.Engine

func TestMain(m *testing.M) { testenv.Main(m, "mcp", &engine) }

// bound is generous: it catches hangs, it does not measure speed.
const bound = 90 * time.Second

// platform is one in-process eryx (embedded NATS + worker) and an MCP
// server on it.
type platform struct {
	solo   *solo.Solo
	nc     *nats.Conn
	client *jobs.Client
	server *mcp.Server
}

func newPlatform(t *testing.T, mut func(*mcp.ServerConfig)) *platform {
	t.Helper()
	ctx := t.Context()
	s, err := solo.Start(ctx, solo.Options{Engine: engine, DataDir: t.TempDir(), RefreshInterval: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	nc, err := nats.Connect(s.URL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	subjects, _ := jobs.NewSubjects("")
	client, err := jobs.NewClient(nc, subjects)
	if err != nil {
		t.Fatal(err)
	}
	store, err := kvstate.Open(ctx, client.JetStream(), kvstate.Config{Bucket: subjects.SessionsBucket(), BlobBucket: subjects.SessionBlobsBucket()})
	if err != nil {
		t.Fatal(err)
	}
	cat := catalogue.New(context.Background(), nc, catalogue.Options{})
	t.Cleanup(cat.Close)
	cfg := mcp.ServerConfig{Client: client, Catalogue: cat, Sessions: store, Logger: testLogger(t)}
	if mut != nil {
		mut(&cfg)
	}
	srv, err := mcp.NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return &platform{solo: s, nc: nc, client: client, server: srv}
}

// transports connect a client in the two ways eryx-mcp serves.
var transports = []struct {
	name    string
	connect func(t *testing.T, p *platform, opts *sdk.ClientOptions) *sdk.ClientSession
}{
	{"in-process", func(t *testing.T, p *platform, opts *sdk.ClientOptions) *sdk.ClientSession {
		ct, st := sdk.NewInMemoryTransports()
		ss, err := p.server.MCP().Connect(t.Context(), st, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = ss.Close() })
		return connectClient(t, ct, opts)
	}},
	{"stdio-pipes", func(t *testing.T, p *platform, opts *sdk.ClientOptions) *sdk.ClientSession {
		// What eryx-mcp serve does on stdin/stdout, over OS pipes.
		sr, cw, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		cr, sw, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		ss, err := p.server.MCP().Connect(t.Context(), mcp.NewLineTransport(sr, sw, sr), nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = ss.Close() })
		return connectClient(t, &sdk.IOTransport{Reader: cr, Writer: cw}, opts)
	}},
	{"http", func(t *testing.T, p *platform, opts *sdk.ClientOptions) *sdk.ClientSession {
		hs := httptest.NewServer(p.server.HTTPHandler("s3cret"))
		t.Cleanup(hs.Close)
		return connectClient(t, &sdk.StreamableClientTransport{Endpoint: hs.URL, HTTPClient: tokenClient("s3cret")}, opts)
	}},
}

func connectClient(t *testing.T, tr sdk.Transport, opts *sdk.ClientOptions) *sdk.ClientSession {
	t.Helper()
	c := sdk.NewClient(&sdk.Implementation{Name: "eryx-test", Version: "1"}, opts)
	cs, err := c.Connect(t.Context(), tr, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cs.Close() })
	return cs
}

type tokenTransport struct{ token string }

func (tt tokenTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+tt.token)
	return http.DefaultTransport.RoundTrip(r)
}

func tokenClient(token string) *http.Client {
	return &http.Client{Transport: tokenTransport{token}}
}

func callRun(t *testing.T, ctx context.Context, cs *sdk.ClientSession, args map[string]any) (*sdk.CallToolResult, mcp.RunOutput) {
	t.Helper()
	res, err := cs.CallTool(ctx, &sdk.CallToolParams{Name: "run_python", Arguments: args})
	if err != nil {
		t.Fatalf("run_python: %v", err)
	}
	return res, decodeRun(t, res)
}

func decodeRun(t *testing.T, res *sdk.CallToolResult) mcp.RunOutput {
	t.Helper()
	var out mcp.RunOutput
	if res.StructuredContent == nil {
		t.Fatalf("no structured content: %s", text(res))
	}
	b, _ := json.Marshal(res.StructuredContent)
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

func text(res *sdk.CallToolResult) string {
	var b strings.Builder
	for _, c := range res.Content {
		if tc, ok := c.(*sdk.TextContent); ok {
			b.WriteString(tc.Text)
		}
	}
	return b.String()
}

func TestServeToolsAndRuns(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			p := newPlatform(t, nil)
			cs := tr.connect(t, p, nil)
			ctx, cancel := context.WithTimeout(t.Context(), bound)
			defer cancel()

			tools, err := cs.ListTools(ctx, nil)
			if err != nil {
				t.Fatal(err)
			}
			names := map[string]*sdk.Tool{}
			for _, tool := range tools.Tools {
				names[tool.Name] = tool
			}
			for _, want := range []string{"run_python", "list_callbacks", "reset_session", "delete_session"} {
				if names[want] == nil {
					t.Fatalf("tool %s missing from %v", want, names)
				}
			}
			if d := names["run_python"].Description; !strings.Contains(d, "await") || !strings.Contains(d, "session") {
				t.Errorf("run_python's description does not teach await and sessions: %q", d)
			}

			res, out := callRun(t, ctx, cs, map[string]any{"code": "import asyncio\nawait asyncio.sleep(0)\nprint('hello')\nresult = {'n': 6*7}"})
			if res.IsError || out.Status != "ok" || out.Stdout != "hello\n" {
				t.Fatalf("got %+v / %s", out, text(res))
			}
			if m, ok := out.Result.(map[string]any); !ok || m["n"] != float64(42) {
				t.Fatalf("result %#v", out.Result)
			}
			if !strings.Contains(text(res), "hello") || !strings.Contains(text(res), `{"n":42}`) {
				t.Errorf("readable text lacks output or result: %q", text(res))
			}

			// An exception is a tool error with the exception in both forms.
			res, out = callRun(t, ctx, cs, map[string]any{"code": "raise ValueError('bad input')"})
			if !res.IsError || out.Status != "error" || out.Error == nil || out.Error.Type != "ValueError" {
				t.Fatalf("got %+v", out)
			}
			if !strings.Contains(text(res), "ValueError: bad input") {
				t.Errorf("text: %q", text(res))
			}
		})
	}
}

func TestServeSessionAcrossCalls(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			p := newPlatform(t, nil)
			cs := tr.connect(t, p, nil)
			ctx, cancel := context.WithTimeout(t.Context(), bound)
			defer cancel()
			if _, out := callRun(t, ctx, cs, map[string]any{"code": "x = 21\ndef double(v): return v * 2", "session": "s1"}); out.Status != "ok" {
				t.Fatalf("first call: %+v", out)
			}
			_, out := callRun(t, ctx, cs, map[string]any{"code": "result = double(x)", "session": "s1"})
			if out.Status != "ok" || out.Result != float64(42) {
				t.Fatalf("second call: %+v", out)
			}
			// Another session does not see it.
			_, out = callRun(t, ctx, cs, map[string]any{"code": "result = 'x' in globals()", "session": "s2"})
			if out.Result != false {
				t.Fatalf("s2 sees s1's state: %+v", out)
			}

			// reset_session empties it; delete_session then finds nothing.
			if res, err := cs.CallTool(ctx, &sdk.CallToolParams{Name: "reset_session", Arguments: map[string]any{"session": "s1"}}); err != nil || res.IsError {
				t.Fatalf("reset: %v %s", err, text(res))
			}
			_, out = callRun(t, ctx, cs, map[string]any{"code": "result = 'x' in globals()", "session": "s1"})
			if out.Status != "ok" || out.Result != false {
				t.Fatalf("after reset: %+v", out)
			}
			if res, err := cs.CallTool(ctx, &sdk.CallToolParams{Name: "delete_session", Arguments: map[string]any{"session": "s1"}}); err != nil || res.IsError {
				t.Fatalf("delete: %v %s", err, text(res))
			}
			res, err := cs.CallTool(ctx, &sdk.CallToolParams{Name: "delete_session", Arguments: map[string]any{"session": "s1"}})
			if err != nil || !res.IsError || !strings.Contains(text(res), "does not exist") {
				t.Fatalf("second delete: %v %s", err, text(res))
			}
		})
	}
}

// progressLog collects a call's progress notifications.
type progressLog struct {
	mu   sync.Mutex
	msgs []*sdk.ProgressNotificationParams
}

func (l *progressLog) handler(_ context.Context, req *sdk.ProgressNotificationClientRequest) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.msgs = append(l.msgs, req.Params)
}

func (l *progressLog) find(pred func(*sdk.ProgressNotificationParams) bool) *sdk.ProgressNotificationParams {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, m := range l.msgs {
		if pred(m) {
			return m
		}
	}
	return nil
}

// jobID is the id the first notification announces.
func (l *progressLog) jobID() string {
	m := l.find(func(m *sdk.ProgressNotificationParams) bool { return strings.HasPrefix(m.Message, "job ") })
	if m == nil {
		return ""
	}
	return strings.Fields(m.Message)[1]
}

func TestServeStreamsOutputAsProgress(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			p := newPlatform(t, nil)
			var log progressLog
			cs := tr.connect(t, p, &sdk.ClientOptions{ProgressNotificationHandler: log.handler})
			ctx, cancel := context.WithTimeout(t.Context(), bound)
			defer cancel()
			params := &sdk.CallToolParams{Name: "run_python", Arguments: map[string]any{
				"code": "import sys\nprint('one', flush=True)\nprint('two', file=sys.stderr, flush=True)\nresult = 1",
			}}
			params.SetProgressToken("tok-1")
			res, err := cs.CallTool(ctx, params)
			if err != nil || res.IsError {
				t.Fatalf("%v %v", err, res)
			}
			// Notifications may trail the response on another stream.
			testenv.PollUntil(t, bound, "stdout and stderr notifications", func() bool {
				return log.find(func(m *sdk.ProgressNotificationParams) bool {
					return strings.Contains(m.Message, "one") && m.Meta["eryx/stream"] == "stdout"
				}) != nil && log.find(func(m *sdk.ProgressNotificationParams) bool {
					return strings.Contains(m.Message, "two") && m.Meta["eryx/stream"] == "stderr"
				}) != nil
			})
			log.mu.Lock()
			defer log.mu.Unlock()
			last := 0.0
			for _, m := range log.msgs {
				if m.ProgressToken != "tok-1" || m.Progress <= last {
					t.Fatalf("notification %+v after progress %v", m, last)
				}
				last = m.Progress
			}
		})
	}
}

// startSpin starts a call of `while True: pass` and waits until the code
// is running; it returns the job's id.
func startSpin(t *testing.T, ctx context.Context, cs *sdk.ClientSession, log *progressLog) (string, chan error) {
	t.Helper()
	params := &sdk.CallToolParams{Name: "run_python", Arguments: map[string]any{"code": "print('spinning', flush=True)\nwhile True: pass"}}
	params.SetProgressToken(7)
	done := make(chan error, 1)
	go func() {
		_, err := cs.CallTool(ctx, params)
		done <- err
	}()
	testenv.PollUntil(t, bound, "the code to start", func() bool {
		return log.find(func(m *sdk.ProgressNotificationParams) bool { return strings.Contains(m.Message, "spinning") }) != nil
	})
	id := log.jobID()
	if id == "" {
		t.Fatal("no job id announced")
	}
	return id, done
}

func waitCancelled(t *testing.T, p *platform, id string) {
	t.Helper()
	var res *jobs.Result
	testenv.PollUntil(t, bound, "the job to end cancelled", func() bool {
		r, err := p.client.Lookup(context.Background(), id)
		res = r
		return err == nil
	})
	if res.Status != jobs.StatusCancelled {
		t.Fatalf("job ended %s (%s), want cancelled", res.Status, res.Reason)
	}
}

func TestServeClientCancelStopsTheJob(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			p := newPlatform(t, nil)
			var log progressLog
			cs := tr.connect(t, p, &sdk.ClientOptions{ProgressNotificationHandler: log.handler})
			ctx, cancel := context.WithCancel(t.Context())
			id, done := startSpin(t, ctx, cs, &log)
			cancel() // the SDK sends notifications/cancelled
			if err := <-done; !errors.Is(err, context.Canceled) {
				t.Fatalf("call ended with %v", err)
			}
			waitCancelled(t, p, id)

			// The server keeps serving this client.
			cctx, ccancel := context.WithTimeout(t.Context(), bound)
			defer ccancel()
			if _, out := callRun(t, cctx, cs, map[string]any{"code": "result = 'still here'"}); out.Result != "still here" {
				t.Fatalf("after cancel: %+v", out)
			}
		})
	}
}

// A client that goes away mid-run (its process dies: stdin reaches EOF;
// over HTTP it ends its session) gets its job cancelled.
func TestServeClientDisconnectCancelsTheJob(t *testing.T) {
	t.Run("stdio", func(t *testing.T) {
		p := newPlatform(t, nil)
		sr, cw, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		cr, sw, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		ss, err := p.server.MCP().Connect(t.Context(), mcp.NewLineTransport(sr, sw, sr), nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = ss.Close() })
		var log progressLog
		c := sdk.NewClient(&sdk.Implementation{Name: "eryx-test", Version: "1"}, &sdk.ClientOptions{ProgressNotificationHandler: log.handler})
		cs, err := c.Connect(t.Context(), &sdk.IOTransport{Reader: cr, Writer: cw}, nil)
		if err != nil {
			t.Fatal(err)
		}
		id, _ := startSpin(t, t.Context(), cs, &log)
		// The client process dies: its ends of the pipes close.
		_ = cw.Close()
		_ = cr.Close()
		waitCancelled(t, p, id)
	})
	t.Run("http", func(t *testing.T) {
		p := newPlatform(t, nil)
		hs := httptest.NewServer(p.server.HTTPHandler(""))
		t.Cleanup(hs.Close)
		var log progressLog
		cs := connectClient(t, &sdk.StreamableClientTransport{Endpoint: hs.URL}, &sdk.ClientOptions{ProgressNotificationHandler: log.handler})
		id, _ := startSpin(t, t.Context(), cs, &log)
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodDelete, hs.URL, nil)
		req.Header.Set("Mcp-Session-Id", cs.ID())
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		waitCancelled(t, p, id)
	})
}

func TestServeLimits(t *testing.T) {
	p := newPlatform(t, func(c *mcp.ServerConfig) { c.MaxCodeBytes = 1000 })
	cs := transports[0].connect(t, p, nil)
	ctx, cancel := context.WithTimeout(t.Context(), bound)
	defer cancel()

	tests := []struct {
		name string
		args map[string]any
		want string // in the text of the tool error
	}{
		{"code over the limit", map[string]any{"code": strings.Repeat("x", 1001)}, "code_bytes"},
		{"empty code", map[string]any{"code": "  "}, "empty"},
		{"missing code", map[string]any{}, "code"},
		{"wrong type", map[string]any{"code": 42}, "code"},
		{"bad session", map[string]any{"code": "1", "session": "a.b"}, "session"},
		{"run time limit", map[string]any{"code": "while True: pass", "timeout_seconds": 1}, "timeout"},
		{"memory limit", map[string]any{"code": "x = bytearray(1 << 30)"}, "MemoryError"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, err := cs.CallTool(ctx, &sdk.CallToolParams{Name: "run_python", Arguments: tt.args})
			if err != nil {
				t.Fatal(err)
			}
			if !res.IsError || !strings.Contains(text(res), tt.want) {
				t.Fatalf("want a tool error mentioning %q, got %v: %s", tt.want, res.IsError, text(res))
			}
		})
	}
}

func TestServeBadInput(t *testing.T) {
	p := newPlatform(t, nil)
	hs := httptest.NewServer(p.server.HTTPHandler("s3cret"))
	t.Cleanup(hs.Close) // after the client's session closes
	ctx, cancel := context.WithTimeout(t.Context(), bound)
	defer cancel()

	// No token, or a wrong one: 401 before any MCP processing.
	for _, auth := range []string{"", "Bearer wrong", "Basic s3cret"} {
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, hs.URL, strings.NewReader(`{}`))
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("auth %q: status %d", auth, resp.StatusCode)
		}
	}

	// Malformed JSON-RPC gets a JSON-RPC parse error.
	post := func(body string) (int, string) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, hs.URL, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer s3cret")
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json, text/event-stream")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = resp.Body.Close() }()
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
		return resp.StatusCode, string(b)
	}
	code, body := post(`{"jsonrpc":"2.0","id":1,"method":`)
	if code != http.StatusBadRequest && !strings.Contains(body, "-32700") {
		t.Errorf("malformed JSON: %d %s", code, body)
	}
	code, body = post(string(bytes.Repeat([]byte("x"), mcp.DefaultMaxRequestBytes+10)))
	if code != http.StatusRequestEntityTooLarge {
		t.Errorf("oversized body: %d %s", code, body)
	}

	// Over stdio, garbage lines get JSON-RPC errors and the session goes
	// on.
	sr, cw, _ := os.Pipe()
	cr, sw, _ := os.Pipe()
	ss, err := p.server.MCP().Connect(ctx, mcp.NewLineTransport(sr, sw, sr), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = ss.Close() }()
	lines := bufio.NewReader(cr)
	for _, tt := range []struct{ in, want string }{
		{"not json at all", `"code":-32700`},
		{`{"jsonrpc":"2.0","id":7,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"x","version":"1"}}}`, `"id":7,"result"`},
		{`{"id":4,"foo":1}`, `"id":4,"error":{"code":-32600`},
		{`[{"jsonrpc":"2.0","id":5,"method":"ping"}]`, `"code":-32600`},
		{`{"jsonrpc":"2.0","id":6,"method":"no/such/method"}`, `"id":6,"error":{"code":-32601`},
		{strings.Repeat("z", mcp.DefaultMaxRequestBytes+1), `over the limit`},
	} {
		if _, err := io.WriteString(cw, tt.in+"\n"); err != nil {
			t.Fatal(err)
		}
		got, err := lines.ReadString('\n')
		if err != nil || !strings.Contains(got, tt.want) {
			t.Fatalf("%.40s: got %q (%v), want %s", tt.in, got, err, tt.want)
		}
	}
	_ = cw.Close()

	// Over a real session: an unknown tool is a JSON-RPC error, and the
	// server still serves.
	cs := connectClient(t, &sdk.StreamableClientTransport{Endpoint: hs.URL, HTTPClient: tokenClient("s3cret")}, nil)
	_, err = cs.CallTool(ctx, &sdk.CallToolParams{Name: "no_such_tool", Arguments: map[string]any{}})
	if err == nil || !strings.Contains(err.Error(), "no_such_tool") {
		t.Fatalf("unknown tool: %v", err)
	}
	if _, out := callRun(t, ctx, cs, map[string]any{"code": "result = 1"}); out.Result != float64(1) {
		t.Fatalf("after bad input: %+v", out)
	}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(b)))
	return len(b), nil
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
}
