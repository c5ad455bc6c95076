package catalogue_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/eryx-dev/eryx/callbacks"
	"github.com/eryx-dev/eryx/callbacks/catalogue"
	"github.com/eryx-dev/eryx/internal/check"
	"github.com/eryx-dev/eryx/runtime/sandbox"
)

func startNATS(t testing.TB) *server.Server {
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
	return s
}

func connect(t testing.TB, s *server.Server) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(s.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// fastOpts keeps discovery windows short so tests do not wait on them.
func fastOpts() catalogue.Options {
	return catalogue.Options{
		DiscoveryWait:   200 * time.Millisecond,
		DiscoveryQuiet:  20 * time.Millisecond,
		RefreshInterval: -1,
		MinRefresh:      time.Millisecond,
		Logger:          quiet(),
	}
}

func serve(t testing.TB, nc *nats.Conn, svc callbacks.Service) *callbacks.Server {
	t.Helper()
	if svc.Logger == nil {
		svc.Logger = quiet()
	}
	srv, err := callbacks.Start(context.Background(), nc, svc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Stop() })
	return srv
}

var schemaXY = json.RawMessage(`{"type":"object","properties":{"x":{"type":"integer"},"y":{"type":"integer"}}}`)

func toolsService() callbacks.Service {
	return callbacks.Service{
		Name:    "tools",
		Version: "1.0.0",
		Callbacks: []callbacks.Def{
			{Name: "add", Description: "x + y", Schema: schemaXY, Handler: callbacks.Typed(
				func(_ context.Context, a struct{ X, Y int }) (int, error) { return a.X + a.Y, nil })},
			{Name: "trace.echo", Description: "echoes request headers", Handler: func(ctx context.Context, _ json.RawMessage) (any, error) {
				h := callbacks.RequestHeaders(ctx)
				return map[string]string{"traceparent": h.Get("traceparent"), "job": h.Get("Eryx-Job"), "injected": h.Get("X-Injected")}, nil
			}},
			{Name: "fail", Handler: func(context.Context, json.RawMessage) (any, error) {
				return nil, callbacks.Errorf("ValueError", "x must be positive")
			}},
			{Name: "crash", Handler: func(context.Context, json.RawMessage) (any, error) { panic("oops") }},
			{Name: "sleep", Handler: func(ctx context.Context, _ json.RawMessage) (any, error) {
				select {
				case <-ctx.Done(): // the caller's budget ends the handler too
					return nil, ctx.Err()
				case <-time.After(5 * time.Second):
					return "slept", nil
				}
			}},
		},
	}
}

func TestDiscovery(t *testing.T) {
	s := startNATS(t)
	nc := connect(t, s)
	serve(t, connect(t, s), toolsService())
	serve(t, connect(t, s), toolsService()) // a second instance
	// A newer instance of another service, same callback on its own subject.
	serve(t, connect(t, s), callbacks.Service{Name: "clock", Version: "2.0.0", Callbacks: []callbacks.Def{
		{Name: "get_time", Description: "now", Handler: func(context.Context, json.RawMessage) (any, error) { return "noon", nil }},
	}})
	// Micro services that are not eryx callbacks must stay invisible.
	rnc := connect(t, s)
	foreign, err := micro.AddService(rnc, micro.Config{Name: "billing", Version: "1.0.0",
		Endpoint: &micro.EndpointConfig{Subject: "billing.charge", Handler: micro.HandlerFunc(func(r micro.Request) { _ = r.Respond([]byte(`1`)) })}})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = foreign.Stop() }()
	// An announcement pointing outside <prefix>.cb. is refused.
	rogue, err := micro.AddService(rnc, micro.Config{Name: "rogue", Version: "1.0.0"})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = rogue.Stop() }()
	if err := rogue.AddEndpoint("steal", micro.HandlerFunc(func(r micro.Request) {}),
		micro.WithEndpointSubject("$JS.API.STREAM.DELETE.ERYX_JOBS"),
		micro.WithEndpointMetadata(map[string]string{callbacks.MetaCallback: "steal"})); err != nil {
		t.Fatal(err)
	}
	if err := rnc.Flush(); err != nil {
		t.Fatal(err)
	}

	c := catalogue.New(t.Context(), nc, fastOpts())
	defer c.Close()
	specs, err := c.List(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, s := range specs {
		names = append(names, s.Name)
	}
	if got := strings.Join(names, ","); got != "add,crash,fail,get_time,sleep,trace.echo" {
		t.Fatalf("names = %s", got)
	}
	if specs[0].Description != "x + y" || string(specs[0].Schema) != string(schemaXY) {
		t.Fatalf("add spec = %+v", specs[0])
	}
	entries, err := c.Entries(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if e := entries[0]; e.Subject != "eryx.cb.add" || e.Service != "tools" || e.Instances != 2 {
		t.Fatalf("add entry = %+v", e)
	}
	if e := entries[3]; e.Name != "get_time" || e.Service != "clock" || e.Version != "2.0.0" {
		t.Fatalf("get_time entry = %+v", e)
	}
}

func TestInvoke(t *testing.T) {
	s := startNATS(t)
	nc := connect(t, s)
	serve(t, connect(t, s), toolsService())
	opts := fastOpts()
	opts.Inject = func(_ context.Context, h nats.Header) { h.Set("X-Injected", "yes") }
	c := catalogue.New(t.Context(), nc, opts)
	defer c.Close()

	ctx := catalogue.WithHeaders(t.Context(), nats.Header{"traceparent": {"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}})
	ctx = catalogue.WithHeaders(ctx, nats.Header{"Eryx-Job": {"job-1"}})

	tests := []struct {
		name, args string
		timeout    time.Duration
		want       string
		wantType   string // *sandbox.CallbackError type
		wantMsg    string
		wantIs     []error
	}{
		{name: "add", args: `{"x":40,"y":2}`, want: `42`},
		{name: "trace.echo", args: `{}`, want: `{"injected":"yes","job":"job-1","traceparent":"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}`},
		// Refused on the host by the schema, before the service's own check.
		{name: "add", args: `{"x":"a"}`, wantType: "TypeError", wantMsg: "argument x: got string, want integer",
			wantIs: []error{catalogue.ErrInvalidArguments}},
		{name: "fail", args: `{}`, wantType: "ValueError", wantMsg: "x must be positive"},
		{name: "crash", args: `{}`, wantType: "InternalError", wantMsg: "panicked: oops"},
		{name: "sleep", args: `{}`, timeout: 150 * time.Millisecond, wantType: "TimeoutError", wantMsg: "did not answer within",
			wantIs: []error{catalogue.ErrTimeout, context.DeadlineExceeded}},
		{name: "nope", wantIs: []error{sandbox.ErrUnknownCallback}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx := ctx
			if tc.timeout > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, tc.timeout)
				defer cancel()
			}
			got, err := c.Invoke(ctx, tc.name, json.RawMessage(tc.args))
			if tc.want != "" {
				if err != nil || string(got) != tc.want {
					t.Fatalf("got %s, %v; want %s", got, err, tc.want)
				}
				return
			}
			if err == nil {
				t.Fatalf("want error, got %s", got)
			}
			for _, target := range tc.wantIs {
				if !errors.Is(err, target) {
					t.Errorf("%v is not %v", err, target)
				}
			}
			if tc.wantType != "" {
				var ce *sandbox.CallbackError
				if !errors.As(err, &ce) || ce.Type != tc.wantType || !strings.Contains(ce.Message, tc.wantMsg) {
					t.Fatalf("error %v (%#v): want CallbackError %s containing %q", err, ce, tc.wantType, tc.wantMsg)
				}
			}
		})
	}
}

func TestServiceDownIsPromptAndClear(t *testing.T) {
	s := startNATS(t)
	nc := connect(t, s)
	srv := serve(t, connect(t, s), toolsService())
	c := catalogue.New(t.Context(), nc, fastOpts())
	defer c.Close()
	if _, err := c.Invoke(t.Context(), "add", json.RawMessage(`{"x":1,"y":1}`)); err != nil {
		t.Fatal(err)
	}
	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}

	// Reported as unavailable (no responders), not waited out: a timeout
	// would be context.DeadlineExceeded after check.Bound.
	ctx, cancel := context.WithTimeout(t.Context(), check.Bound)
	defer cancel()
	_, err := c.Invoke(ctx, "add", json.RawMessage(`{"x":1,"y":1}`))
	var ce *sandbox.CallbackError
	if !errors.Is(err, catalogue.ErrServiceUnavailable) || !errors.As(err, &ce) {
		t.Fatalf("err = %v, want ErrServiceUnavailable with a CallbackError", err)
	}
	if ce.Type != "ServiceUnavailable" || ce.Message != "callback 'add' has no running service" {
		t.Fatalf("callback error = %+v", ce)
	}
	// The failure triggered a refresh, which drops the dead callbacks.
	waitFor(t, func() bool {
		specs, _ := c.List(t.Context())
		return len(specs) == 0
	})
}

func TestOnDemandAndBackgroundRefresh(t *testing.T) {
	s := startNATS(t)
	nc := connect(t, s)
	// A generous first-reply wait: on a loaded machine (CI runs packages in
	// parallel) a reply can take longer than fastOpts' 200 ms; discovery
	// still ends 20 ms after the last reply.
	slowOK := fastOpts()
	slowOK.DiscoveryWait = 2 * time.Second
	c := catalogue.New(t.Context(), nc, slowOK)
	defer c.Close()
	if specs, err := c.List(t.Context()); err != nil || len(specs) != 0 {
		t.Fatalf("empty bus: %v, %v", specs, err)
	}
	// Started after the first discovery: an unknown name triggers a refresh
	// (once MinRefresh, 1 ms here, has passed since the last one).
	// There is no background refresh (RefreshInterval -1): only the
	// invocations themselves can find the new service.
	serve(t, connect(t, s), toolsService())
	check.For(t, check.Bound, 5*time.Millisecond, func() error {
		got, err := c.Invoke(t.Context(), "add", json.RawMessage(`{"x":1,"y":2}`))
		if err != nil || string(got) != "3" {
			return fmt.Errorf("after on-demand refresh: %s, %w", got, err)
		}
		return nil
	})

	opts := fastOpts()
	opts.RefreshInterval = 50 * time.Millisecond
	bg := catalogue.New(t.Context(), nc, opts)
	defer bg.Close()
	serve(t, connect(t, s), callbacks.Service{Name: "late", Callbacks: []callbacks.Def{
		{Name: "late_cb", Handler: func(context.Context, json.RawMessage) (any, error) { return nil, nil }}}})
	waitFor(t, func() bool {
		specs, _ := bg.List(t.Context())
		for _, s := range specs {
			if s.Name == "late_cb" {
				return true
			}
		}
		return false
	})
}

func TestEmptyBusDiscoveryIsFast(t *testing.T) {
	nc := connect(t, startNATS(t))
	opts := fastOpts()
	opts.DiscoveryWait = time.Hour // the no-responders status must cut it short
	c := catalogue.New(t.Context(), nc, opts)
	defer c.Close()
	ctx, cancel := context.WithTimeout(t.Context(), check.Bound)
	defer cancel()
	if _, err := c.List(ctx); err != nil || ctx.Err() != nil {
		t.Fatalf("discovery on an empty bus was not cut short: %v", err)
	}
}

func TestDefaultTimeoutAndCancellation(t *testing.T) {
	s := startNATS(t)
	nc := connect(t, s)
	serve(t, connect(t, s), toolsService())
	opts := fastOpts()
	opts.DefaultTimeout = 100 * time.Millisecond
	c := catalogue.New(t.Context(), nc, opts)
	defer c.Close()

	// No deadline on ctx: DefaultTimeout applies, never a hang.
	_, err := c.Invoke(context.Background(), "sleep", json.RawMessage(`{}`))
	if !errors.Is(err, catalogue.ErrTimeout) {
		t.Fatalf("no-deadline call: %v, want ErrTimeout", err)
	}
	// Cancellation (job cancelled) is not a callback error.
	ctx, cancel := context.WithCancel(t.Context())
	time.AfterFunc(50*time.Millisecond, cancel)
	_, err = c.Invoke(ctx, "sleep", json.RawMessage(`{}`))
	var ce *sandbox.CallbackError
	if !errors.Is(err, context.Canceled) || errors.As(err, &ce) {
		t.Fatalf("cancelled call: %v, want context.Canceled only", err)
	}
}

func TestForeignReplies(t *testing.T) {
	s := startNATS(t)
	nc := connect(t, s)
	// Services that follow the metadata convention but reply loosely, as a
	// hand-written micro service might.
	snc := connect(t, s)
	ms, err := micro.AddService(snc, micro.Config{Name: "loose", Version: "1.0.0"})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = ms.Stop() }()
	add := func(name string, h func(micro.Request)) {
		t.Helper()
		if err := ms.AddEndpoint(name, micro.HandlerFunc(h), micro.WithEndpointSubject("eryx.cb."+name),
			micro.WithEndpointMetadata(map[string]string{callbacks.MetaCallback: name})); err != nil {
			t.Fatal(err)
		}
	}
	add("text", func(r micro.Request) { _ = r.Respond([]byte("hello")) })
	add("empty", func(r micro.Request) { _ = r.Respond(nil) })
	add("notfound", func(r micro.Request) { _ = r.Error("404", "no such thing", nil) })
	if err := snc.Flush(); err != nil {
		t.Fatal(err)
	}

	c := catalogue.New(t.Context(), nc, fastOpts())
	defer c.Close()
	tests := []struct {
		name, want, wantType, wantMsg string
	}{
		{name: "text", wantType: "ProtocolError", wantMsg: "invalid JSON"},
		{name: "empty", want: "null"},
		{name: "notfound", wantType: "ServiceError", wantMsg: "no such thing (code 404)"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := c.Invoke(t.Context(), tc.name, json.RawMessage(`{}`))
			if tc.want != "" {
				if err != nil || string(got) != tc.want {
					t.Fatalf("got %s, %v", got, err)
				}
				return
			}
			var ce *sandbox.CallbackError
			if !errors.As(err, &ce) || ce.Type != tc.wantType || !strings.Contains(ce.Message, tc.wantMsg) {
				t.Fatalf("err = %v, want %s containing %q", err, tc.wantType, tc.wantMsg)
			}
		})
	}
}

func TestConnectionClosed(t *testing.T) {
	s := startNATS(t)
	nc := connect(t, s)
	serve(t, connect(t, s), toolsService())
	c := catalogue.New(t.Context(), nc, fastOpts())
	defer c.Close()
	if _, err := c.List(t.Context()); err != nil {
		t.Fatal(err)
	}
	nc.Close()
	_, err := c.Invoke(t.Context(), "add", json.RawMessage(`{"x":1,"y":1}`))
	var ce *sandbox.CallbackError
	if !errors.Is(err, catalogue.ErrServiceUnavailable) || !errors.As(err, &ce) || ce.Type != "ServiceUnavailable" {
		t.Fatalf("err = %v", err)
	}
}

func TestNeverDiscoveredIsUnavailableNotUnknown(t *testing.T) {
	nc := connect(t, startNATS(t))
	nc.Close()
	c := catalogue.New(t.Context(), nc, fastOpts())
	defer c.Close()
	_, err := c.Invoke(t.Context(), "add", json.RawMessage(`{"x":1,"y":1}`))
	var ce *sandbox.CallbackError
	if !errors.Is(err, catalogue.ErrServiceUnavailable) || errors.Is(err, sandbox.ErrUnknownCallback) || !errors.As(err, &ce) {
		t.Fatalf("err = %v, want ErrServiceUnavailable", err)
	}
	if _, err := c.List(t.Context()); err == nil {
		t.Fatal("List without any discovery must fail")
	}
}

func TestFilter(t *testing.T) {
	s := startNATS(t)
	nc := connect(t, s)
	serve(t, connect(t, s), toolsService())
	c := catalogue.New(t.Context(), nc, fastOpts())
	defer c.Close()

	tests := []struct {
		name  string
		allow []string
		want  string
	}{
		{"nil admits all", nil, "add,crash,fail,sleep,trace.echo"},
		{"empty admits none", []string{}, ""},
		{"exact", []string{"add", "fail", "missing"}, "add,fail"},
		{"namespace", []string{"trace.*"}, "trace.echo"},
		{"star", []string{"*"}, "add,crash,fail,sleep,trace.echo"},
		{"namespace is not a prefix match", []string{"tr*", "trace"}, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := c.Filter(tc.allow)
			specs, err := f.List(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, s := range specs {
				names = append(names, s.Name)
			}
			if got := strings.Join(names, ","); got != tc.want {
				t.Fatalf("List = %q, want %q", got, tc.want)
			}
			_, err = f.Invoke(t.Context(), "add", json.RawMessage(`{"x":1,"y":1}`))
			admitted := strings.Contains(","+tc.want+",", ",add,")
			if admitted != (err == nil) {
				t.Fatalf("Invoke(add) err = %v, admitted = %v", err, admitted)
			}
			if !admitted && !errors.Is(err, sandbox.ErrUnknownCallback) {
				t.Fatalf("refused call: %v, want ErrUnknownCallback", err)
			}
		})
	}
	// The unfiltered catalogue is unaffected by filters' in-place work.
	if specs, _ := c.List(t.Context()); len(specs) != 5 {
		t.Fatalf("catalogue changed: %v", specs)
	}
}

func TestConcurrentInvokes(t *testing.T) {
	s := startNATS(t)
	nc := connect(t, s)
	serve(t, connect(t, s), toolsService())
	c := catalogue.New(t.Context(), nc, fastOpts())
	defer c.Close()
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for i := range 64 {
		wg.Go(func() {
			got, err := c.Invoke(t.Context(), "add", json.RawMessage(fmt.Sprintf(`{"x":%d,"y":1}`, i)))
			if err == nil && string(got) != fmt.Sprint(i+1) {
				err = fmt.Errorf("add(%d,1) = %s", i, got)
			}
			if err != nil {
				errs <- err
			}
			if i%8 == 0 {
				_ = c.Refresh(t.Context()) // refreshes race with calls
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	check.Until(t, 5*time.Second, "the condition", cond)
}

// fakeInfoService answers $SRV.INFO like a micro service announcing n
// callbacks <name>.fNNNN, without serving them: what a hostile or broken
// service can do.
func fakeInfoService(t testing.TB, nc *nats.Conn, name string, n int) int {
	t.Helper()
	info := micro.Info{
		ServiceIdentity: micro.ServiceIdentity{Name: name, ID: name + "-id", Version: "1.0.0"},
		Type:            micro.InfoResponseType,
	}
	for i := range n {
		cb := fmt.Sprintf("%s.f%04d", name, i)
		info.Endpoints = append(info.Endpoints, micro.EndpointInfo{Name: cb, Subject: "eryx.cb." + cb,
			Metadata: map[string]string{callbacks.MetaCallback: cb}})
	}
	data, err := json.Marshal(info)
	if err != nil {
		t.Fatal(err)
	}
	sub, err := nc.Subscribe("$SRV.INFO", func(m *nats.Msg) { _ = m.Respond(data) })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	return len(data)
}

// TestDiscoveryIsBounded floods discovery with 20 services of 4,000
// callbacks each (row 4 of issue #10), one oversized INFO reply and one
// service the filter refuses: the catalogue stays within its bounds and
// reports what it ignored.
func TestDiscoveryIsBounded(t *testing.T) {
	s := startNATS(t)
	svcConn := connect(t, s)
	floodBytes := 0
	for i := range 20 {
		floodBytes = fakeInfoService(t, svcConn, fmt.Sprintf("flood%02d", i), 4000)
	}
	hugeBytes := fakeInfoService(t, svcConn, "huge", 7000)
	fakeInfoService(t, svcConn, "refused", 3)
	serve(t, svcConn, toolsService())

	var mu sync.Mutex
	ignored := map[string]int{}
	opts := fastOpts()
	// The counts below need every reply: generous windows, since 23 replies
	// of up to a few MiB can come slowly on a loaded machine (-race).
	opts.DiscoveryWait, opts.DiscoveryQuiet, opts.DiscoveryMax = check.Bound, 2*time.Second, 2*check.Bound
	opts.MaxPerService, opts.MaxTotal, opts.MaxInfoBytes = 100, 500, (floodBytes+hugeBytes)/2
	opts.AllowService = func(service, _ string) bool { return service != "refused" }
	opts.OnIgnore = func(reason string, n int) { mu.Lock(); ignored[reason] += n; mu.Unlock() }
	cat := catalogue.New(context.Background(), connect(t, s), opts)
	t.Cleanup(cat.Close)

	specs, err := cat.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(specs) != 500 {
		t.Fatalf("%d callbacks, want the total bound 500 (ignored %v)", len(specs), ignored)
	}
	mu.Lock()
	defer mu.Unlock()
	tools := len(toolsService().Callbacks)
	want := map[string]int{
		catalogue.IgnoredInfoBytes: 1,
		catalogue.IgnoredService:   3,
		// The small services come first: tools is kept whole, then
		// flood00..flood03 take 100 each and flood04 what is left.
		catalogue.IgnoredPerService: 4 * 3900,
		catalogue.IgnoredTotal:      15*4000 + 4000 - (100 - tools),
	}
	if fmt.Sprint(ignored) != fmt.Sprint(want) {
		t.Fatalf("ignored %v, want %v", ignored, want)
	}
	kept := 0
	for _, sp := range specs {
		if strings.HasPrefix(sp.Name, "refused.") || strings.HasPrefix(sp.Name, "huge.") {
			t.Fatalf("%s is in the catalogue", sp.Name)
		}
		if !strings.HasPrefix(sp.Name, "flood") {
			kept++
		}
	}
	if kept != tools {
		t.Fatalf("%d of tools' %d callbacks kept: the flood crowded them out", kept, tools)
	}
}
