package callbacks_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/eryx-dev/eryx/callbacks"
	"github.com/eryx-dev/eryx/internal/check"
)

// startNATS runs an embedded nats-server on a random loopback port.
func startNATS(t testing.TB) (*server.Server, *nats.Conn) {
	t.Helper()
	s, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	nc, err := nats.Connect(s.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return s, nc
}

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func demoService(maxConc int) callbacks.Service {
	type addArgs struct{ A, B float64 }
	return callbacks.Service{
		Name:          "demo",
		Version:       "1.2.3",
		Description:   "test service",
		MaxConcurrent: maxConc,
		Logger:        quietLogger(),
		Callbacks: []callbacks.Def{
			{
				Name:        "echo",
				Description: "returns its arguments",
				Schema: json.RawMessage(`{ "type": "object",
					"properties": {"x": {}} }`),
				Handler: func(_ context.Context, args json.RawMessage) (any, error) { return args, nil },
			},
			{
				Name:    "math.add",
				Schema:  json.RawMessage(`{"type":"object","properties":{"a":{"type":"number"},"b":{"type":"number"}},"required":["a","b"]}`),
				Handler: callbacks.Typed(func(_ context.Context, a addArgs) (float64, error) { return a.A + a.B, nil }),
			},
			{
				Name: "headers",
				Handler: func(ctx context.Context, _ json.RawMessage) (any, error) {
					_, hasDeadline := ctx.Deadline()
					return map[string]any{
						"traceparent":  callbacks.RequestHeaders(ctx).Get("traceparent"),
						"subject":      callbacks.RequestSubject(ctx),
						"has_deadline": hasDeadline,
					}, nil
				},
			},
			{
				Name: "deadline_ms",
				Handler: func(ctx context.Context, _ json.RawMessage) (any, error) {
					dl, _ := ctx.Deadline()
					return time.Until(dl).Milliseconds(), nil
				},
			},
			{
				Name: "fail_typed",
				Handler: func(context.Context, json.RawMessage) (any, error) {
					return nil, fmt.Errorf("wrapped: %w", callbacks.Errorf("ValueError", "bad value %d\nsecond line", 7))
				},
			},
			{
				Name:    "fail_plain",
				Handler: func(context.Context, json.RawMessage) (any, error) { return nil, errors.New("disk on fire") },
			},
			{
				Name:    "panics",
				Handler: func(context.Context, json.RawMessage) (any, error) { panic("boom") },
			},
			{
				Name:    "unencodable",
				Handler: func(context.Context, json.RawMessage) (any, error) { return func() {}, nil },
			},
			{
				Name:    "bad_raw",
				Handler: func(context.Context, json.RawMessage) (any, error) { return json.RawMessage(`{nope`), nil },
			},
		},
	}
}

func TestServiceRoundTrip(t *testing.T) {
	for _, maxConc := range []int{1, 8} {
		t.Run(fmt.Sprintf("max_concurrent=%d", maxConc), func(t *testing.T) {
			_, nc := startNATS(t)
			srv, err := callbacks.Start(t.Context(), nc, demoService(maxConc))
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = srv.Stop() }()

			tests := []struct {
				subject  string
				args     string
				header   nats.Header
				want     string // JSON result, when no error
				wantType string // error type, when an error
				wantMsg  string
				wantCode string
			}{
				{subject: "eryx.cb.echo", args: `{"x":1}`, want: `{"x":1}`},
				{subject: "eryx.cb.echo", args: ``, want: `{}`},
				{subject: "eryx.cb.math.add", args: `{"a":2,"b":40}`, want: `42`},
				{subject: "eryx.cb.math.add", args: `[1]`, wantType: "TypeError", wantMsg: "invalid arguments", wantCode: "400"},
				{subject: "eryx.cb.headers", args: `{}`, header: nats.Header{"traceparent": {"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}},
					want: `{"has_deadline":true,"subject":"eryx.cb.headers","traceparent":"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}`},
				{subject: "eryx.cb.fail_typed", wantType: "ValueError", wantMsg: "bad value 7\nsecond line", wantCode: "400"},
				{subject: "eryx.cb.fail_plain", wantType: "RuntimeError", wantMsg: "disk on fire", wantCode: "400"},
				{subject: "eryx.cb.panics", wantType: "InternalError", wantMsg: `callback "panics" panicked: boom`, wantCode: "500"},
				{subject: "eryx.cb.unencodable", wantType: "InternalError", wantMsg: "not JSON-encodable", wantCode: "500"},
				{subject: "eryx.cb.bad_raw", wantType: "InternalError", wantMsg: "not valid JSON", wantCode: "500"},
				// The service survived the panic.
				{subject: "eryx.cb.echo", args: `{"after":"panic"}`, want: `{"after":"panic"}`},
			}
			for _, tc := range tests {
				t.Run(tc.subject, func(t *testing.T) {
					msg := &nats.Msg{Subject: tc.subject, Data: []byte(tc.args), Header: tc.header}
					resp, err := nc.RequestMsg(msg, 5*time.Second)
					if err != nil {
						t.Fatal(err)
					}
					eb, isErr := callbacks.DecodeError(resp.Header, resp.Data)
					if tc.wantType == "" {
						if isErr {
							t.Fatalf("unexpected error reply %+v", eb)
						}
						if got := string(resp.Data); got != tc.want {
							t.Fatalf("result = %s, want %s", got, tc.want)
						}
						return
					}
					if !isErr {
						t.Fatalf("want error, got result %s", resp.Data)
					}
					if eb.Type != tc.wantType || !strings.Contains(eb.Message, tc.wantMsg) {
						t.Fatalf("error = %+v, want type %s containing %q", eb, tc.wantType, tc.wantMsg)
					}
					if code := resp.Header.Get(micro.ErrorCodeHeader); code != tc.wantCode {
						t.Fatalf("code = %q, want %q", code, tc.wantCode)
					}
					if h := resp.Header.Get(micro.ErrorHeader); strings.ContainsAny(h, "\r\n") || h == "" {
						t.Fatalf("error header %q must be one non-empty line", h)
					}
				})
			}

			stats := srv.Info()
			if len(stats.Endpoints) != len(demoService(1).Callbacks) {
				t.Fatalf("endpoints = %d", len(stats.Endpoints))
			}
		})
	}
}

func TestInfoCarriesMetadata(t *testing.T) {
	_, nc := startNATS(t)
	srv, err := callbacks.Start(t.Context(), nc, demoService(0))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = srv.Stop() }()

	resp, err := nc.Request("$SRV.INFO.demo", nil, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var info micro.Info
	if err := json.Unmarshal(resp.Data, &info); err != nil {
		t.Fatal(err)
	}
	if info.Metadata[callbacks.MetaProtocol] != callbacks.ProtocolVersion || info.Version != "1.2.3" {
		t.Fatalf("service identity = %+v", info.ServiceIdentity)
	}
	byName := map[string]micro.EndpointInfo{}
	for _, ep := range info.Endpoints {
		byName[ep.Metadata[callbacks.MetaCallback]] = ep
	}
	echo, add := byName["echo"], byName["math.add"]
	if echo.Subject != "eryx.cb.echo" || echo.QueueGroup != "q" || echo.Metadata[callbacks.MetaDescription] != "returns its arguments" {
		t.Fatalf("echo endpoint = %+v", echo)
	}
	// Schemas are compacted: they travel on every INFO reply.
	if got := echo.Metadata[callbacks.MetaSchema]; got != `{"type":"object","properties":{"x":{}}}` {
		t.Fatalf("echo schema = %s", got)
	}
	if add.Name != "math-add" || add.Subject != "eryx.cb.math.add" {
		t.Fatalf("dotted callback endpoint = %+v", add)
	}
	if _, ok := byName["headers"].Metadata[callbacks.MetaSchema]; ok {
		t.Fatal("a callback without schema must not announce one")
	}
}

func TestInvalidService(t *testing.T) {
	_, nc := startNATS(t)
	ok := func(context.Context, json.RawMessage) (any, error) { return nil, nil }
	tests := []struct {
		name string
		svc  callbacks.Service
	}{
		{"no callbacks", callbacks.Service{Name: "x"}},
		{"bad service name", callbacks.Service{Name: "a b", Callbacks: []callbacks.Def{{Name: "f", Handler: ok}}}},
		{"bad version", callbacks.Service{Name: "x", Version: "one", Callbacks: []callbacks.Def{{Name: "f", Handler: ok}}}},
		{"bad callback name", callbacks.Service{Name: "x", Callbacks: []callbacks.Def{{Name: "get-time", Handler: ok}}}},
		{"wildcard callback name", callbacks.Service{Name: "x", Callbacks: []callbacks.Def{{Name: "a.*", Handler: ok}}}},
		{"duplicate", callbacks.Service{Name: "x", Callbacks: []callbacks.Def{{Name: "f", Handler: ok}, {Name: "f", Handler: ok}}}},
		{"nil handler", callbacks.Service{Name: "x", Callbacks: []callbacks.Def{{Name: "f"}}}},
		{"schema not JSON", callbacks.Service{Name: "x", Callbacks: []callbacks.Def{{Name: "f", Handler: ok, Schema: json.RawMessage(`{`)}}}},
		{"schema not object", callbacks.Service{Name: "x", Callbacks: []callbacks.Def{{Name: "f", Handler: ok, Schema: json.RawMessage(`[]`)}}}},
		{"schema null", callbacks.Service{Name: "x", Callbacks: []callbacks.Def{{Name: "f", Handler: ok, Schema: json.RawMessage(`null`)}}}},
		{"bad prefix", callbacks.Service{Name: "x", Prefix: "eryx.>", Callbacks: []callbacks.Def{{Name: "f", Handler: ok}}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv, err := callbacks.Start(t.Context(), nc, tc.svc)
			if err == nil {
				_ = srv.Stop()
				t.Fatal("want error")
			}
			if !errors.Is(err, callbacks.ErrInvalidService) {
				t.Fatalf("error %v does not wrap ErrInvalidService", err)
			}
		})
	}
}

func TestTimeoutHeaderBoundsHandler(t *testing.T) {
	_, nc := startNATS(t)
	svc := demoService(0)
	svc.Timeout = 30 * time.Second
	srv, err := callbacks.Start(t.Context(), nc, svc)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = srv.Stop() }()
	tests := []struct {
		header   string
		min, max int64
	}{
		{"", 29_000, 30_000},       // the service's own bound
		{"1500", 1_000, 1_550},     // the caller's budget
		{"999999", 29_000, 30_000}, // never beyond the service's bound
		{"junk", 29_000, 30_000},
	}
	for _, tc := range tests {
		msg := nats.NewMsg("eryx.cb.deadline_ms")
		if tc.header != "" {
			msg.Header.Set(callbacks.HeaderTimeout, tc.header)
		}
		resp, err := nc.RequestMsg(msg, 2*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		var ms int64
		if err := json.Unmarshal(resp.Data, &ms); err != nil {
			t.Fatal(err)
		}
		if ms < tc.min || ms > tc.max {
			t.Errorf("header %q: remaining %d ms, want [%d, %d]", tc.header, ms, tc.min, tc.max)
		}
	}
}

func TestConcurrencyAndGracefulStop(t *testing.T) {
	_, nc := startNATS(t)
	var running, peak atomic.Int64
	release := make(chan struct{})
	svc := callbacks.Service{
		Name:          "slow",
		MaxConcurrent: 3,
		Logger:        quietLogger(),
		Callbacks: []callbacks.Def{{Name: "wait", Handler: func(ctx context.Context, _ json.RawMessage) (any, error) {
			n := running.Add(1)
			defer running.Add(-1)
			for {
				p := peak.Load()
				if n <= p || peak.CompareAndSwap(p, n) {
					break
				}
			}
			<-release
			return "done", nil
		}}},
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	srv, err := callbacks.Start(ctx, nc, svc)
	if err != nil {
		t.Fatal(err)
	}

	const n = 5
	replies := make(chan error, n)
	for range n {
		go func() {
			resp, err := nc.Request("eryx.cb.wait", nil, 10*time.Second)
			if err == nil && string(resp.Data) != `"done"` {
				err = fmt.Errorf("reply %s", resp.Data)
			}
			replies <- err
		}()
	}
	waitFor(t, func() bool { return running.Load() == 3 })
	if p := peak.Load(); p != 3 {
		t.Fatalf("peak concurrency = %d, want 3", p)
	}

	// Cancelling the context stops the service; Done waits for in-flight
	// handlers, which still reply.
	cancel()
	select {
	case <-srv.Done():
		t.Fatal("Done before handlers in flight finished")
	case <-time.After(100 * time.Millisecond):
	}
	close(release)
	select {
	case <-srv.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("service did not stop")
	}
	for range n {
		if err := <-replies; err != nil {
			t.Errorf("request: %v", err)
		}
	}
	// Nobody listens any more: a request fails fast.
	if _, err := nc.Request("eryx.cb.wait", nil, 2*time.Second); !errors.Is(err, nats.ErrNoResponders) {
		t.Fatalf("after stop: %v, want no responders", err)
	}
}

func TestMiddlewareOrder(t *testing.T) {
	_, nc := startNATS(t)
	tag := func(s string) callbacks.Middleware {
		return func(def callbacks.Def, next callbacks.Handler) callbacks.Handler {
			return func(ctx context.Context, args json.RawMessage) (any, error) {
				res, err := next(ctx, args)
				return fmt.Sprintf("%s(%s:%v)", s, def.Name, res), err
			}
		}
	}
	svc := callbacks.Service{
		Name:       "mw",
		Logger:     quietLogger(),
		Middleware: []callbacks.Middleware{tag("outer"), tag("inner")},
		Callbacks: []callbacks.Def{{Name: "f", Handler: func(context.Context, json.RawMessage) (any, error) {
			return "x", nil
		}}},
	}
	srv, err := callbacks.Start(t.Context(), nc, svc)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = srv.Stop() }()
	resp, err := nc.Request("eryx.cb.f", nil, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if got := string(resp.Data); got != `"outer(f:inner(f:x))"` {
		t.Fatalf("got %s", got)
	}
}

func TestExtractMiddleware(t *testing.T) {
	_, nc := startNATS(t)
	type traceKey struct{}
	extract := func(ctx context.Context, h nats.Header) context.Context {
		return context.WithValue(ctx, traceKey{}, "span-of-"+h.Get("traceparent"))
	}
	srv, err := callbacks.Start(t.Context(), nc, callbacks.Service{
		Name:       "ex",
		Logger:     quietLogger(),
		Middleware: []callbacks.Middleware{callbacks.Extract(extract)},
		Callbacks: []callbacks.Def{{Name: "f", Handler: func(ctx context.Context, _ json.RawMessage) (any, error) {
			return ctx.Value(traceKey{}), nil
		}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = srv.Stop() }()
	msg := nats.NewMsg("eryx.cb.f")
	msg.Header.Set("traceparent", "00-x")
	resp, err := nc.RequestMsg(msg, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if got := string(resp.Data); got != `"span-of-00-x"` {
		t.Fatalf("got %s", got)
	}
}

func TestServeReturnsWhenConnectionCloses(t *testing.T) {
	_, nc := startNATS(t)
	errc := make(chan error, 1)
	go func() {
		errc <- callbacks.Serve(t.Context(), nc, callbacks.Service{Name: "s", Logger: quietLogger(), Callbacks: []callbacks.Def{{
			Name: "f", Handler: func(context.Context, json.RawMessage) (any, error) { return 1, nil }}}})
	}()
	waitFor(t, func() bool {
		_, err := nc.Request("eryx.cb.f", nil, time.Second)
		return err == nil
	})
	nc.Close()
	select {
	case err := <-errc:
		if !errors.Is(err, nats.ErrConnectionClosed) {
			t.Fatalf("Serve = %v, want ErrConnectionClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return")
	}
}

func TestStatsData(t *testing.T) {
	_, nc := startNATS(t)
	srv, err := callbacks.Start(t.Context(), nc, demoService(4))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = srv.Stop() }()
	for _, subj := range []string{"eryx.cb.fail_plain", "eryx.cb.panics", "eryx.cb.echo"} {
		if _, err := nc.Request(subj, nil, 2*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	resp, err := nc.Request("$SRV.STATS.demo", nil, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var st micro.Stats
	if err := json.Unmarshal(resp.Data, &st); err != nil {
		t.Fatal(err)
	}
	got := map[string]callbacks.EndpointStats{}
	for _, ep := range st.Endpoints {
		var d callbacks.EndpointStats
		if err := json.Unmarshal(ep.Data, &d); err != nil {
			t.Fatalf("%s: data %s: %v", ep.Name, ep.Data, err)
		}
		got[ep.Name] = d
	}
	want := map[string]callbacks.EndpointStats{
		"fail_plain": {Errors: 1},
		"panics":     {Errors: 1, Panics: 1},
		"echo":       {},
	}
	for name, w := range want {
		if got[name] != w {
			t.Errorf("%s stats = %+v, want %+v", name, got[name], w)
		}
	}
}

func TestDecodeError(t *testing.T) {
	tests := []struct {
		name   string
		header map[string][]string
		body   string
		want   callbacks.ErrorBody
		isErr  bool
	}{
		{"success", nil, `42`, callbacks.ErrorBody{}, false},
		{"typed body", map[string][]string{callbacks.HeaderServiceError: {"d"}, callbacks.HeaderServiceErrorCode: {"400"}},
			`{"type":"KeyError","message":"k"}`, callbacks.ErrorBody{Type: "KeyError", Message: "k"}, true},
		{"typed body without message", map[string][]string{callbacks.HeaderServiceError: {"desc"}, callbacks.HeaderServiceErrorCode: {"400"}},
			`{"type":"KeyError"}`, callbacks.ErrorBody{Type: "KeyError", Message: "desc"}, true},
		{"type header only", map[string][]string{callbacks.HeaderServiceError: {"desc"}, callbacks.HeaderErrorType: {"OSError"}},
			``, callbacks.ErrorBody{Type: "OSError", Message: "desc"}, true},
		{"foreign micro error", map[string][]string{callbacks.HeaderServiceError: {"not found"}, callbacks.HeaderServiceErrorCode: {"404"}},
			`plain text`, callbacks.ErrorBody{Type: "ServiceError", Message: "not found (code 404)"}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, isErr := callbacks.DecodeError(tc.header, []byte(tc.body))
			if got != tc.want || isErr != tc.isErr {
				t.Fatalf("got %+v %v, want %+v %v", got, isErr, tc.want, tc.isErr)
			}
		})
	}
}

func TestNames(t *testing.T) {
	for name, valid := range map[string]bool{
		"get_time": true, "http.get": true, "_x.y2": true, "a.b.c": true,
		"": false, "get-time": false, "2x": false, "a..b": false, ".a": false, "a.": false, "a b": false, "a.*": false, "a.>": false,
	} {
		if callbacks.ValidName(name) != valid {
			t.Errorf("ValidName(%q) = %v", name, !valid)
		}
		if valid && callbacks.CallbackName(callbacks.EndpointName(name)) != name {
			t.Errorf("endpoint name of %q does not map back", name)
		}
	}
	if got := callbacks.Subject("acme", "http.get"); got != "acme.cb.http.get" {
		t.Errorf("Subject = %s", got)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	check.Until(t, 5*time.Second, "the condition", cond)
}
