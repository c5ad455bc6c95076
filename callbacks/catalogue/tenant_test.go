package catalogue_test

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"sync/atomic"
	"testing"

	"github.com/nats-io/nats.go/micro"

	"github.com/eryx-dev/eryx/callbacks"
	"github.com/eryx-dev/eryx/callbacks/catalogue"
	"github.com/eryx-dev/eryx/runtime/sandbox"
)

// Arguments that are not an object, or that the schema refuses, never
// reach the service: counted at the service, it received only the valid
// calls.
func TestArgumentsCheckedOnTheHost(t *testing.T) {
	s := startNATS(t)
	var received atomic.Int64
	serve(t, connect(t, s), callbacks.Service{Name: "timer", Version: "1.0.0", Callbacks: []callbacks.Def{{
		Name:   "sleep",
		Schema: json.RawMessage(`{"type":"object","properties":{"seconds":{"type":"number","minimum":0},"label":{"type":"string"}},"required":["seconds"],"additionalProperties":false}`),
		Handler: func(context.Context, json.RawMessage) (any, error) {
			received.Add(1)
			return "ok", nil
		},
	}}})
	c := catalogue.New(t.Context(), connect(t, s), fastOpts())
	defer c.Close()
	view := c.ForJob("acme", "j1")
	refused := []struct{ name, args string }{
		{"negative seconds", `{"seconds":-5}`},
		{"object for a string", `{"seconds":1,"label":{"a":1}}`},
		{"array body", `[1,2]`},
		{"empty body", ``},
		{"null body", `null`},
		{"string body", `"x"`},
		{"missing required", `{}`},
		{"unexpected argument", `{"seconds":1,"evil":true}`},
		{"not JSON", `{"seconds":`},
		{"two documents", `{"seconds":1} {"seconds":2}`},
	}
	for _, tc := range refused {
		t.Run(tc.name, func(t *testing.T) {
			_, err := view.Invoke(t.Context(), "sleep", json.RawMessage(tc.args))
			var ce *sandbox.CallbackError
			if !errors.Is(err, catalogue.ErrInvalidArguments) || !errors.As(err, &ce) || ce.Type != "TypeError" {
				t.Fatalf("Invoke(%s) = %v, want ErrInvalidArguments as a TypeError", tc.args, err)
			}
		})
	}
	if _, err := view.Invoke(t.Context(), "sleep", json.RawMessage(`{"seconds":0.5,"label":"x"}`)); err != nil {
		t.Fatalf("valid call: %v", err)
	}
	if n := received.Load(); n != 1 {
		t.Fatalf("the service received %d requests, want only the 1 valid one", n)
	}
}

// A service may name the tenants that may call it: others do not see its
// callbacks and cannot call them. Every request names the tenant and job.
func TestTenantVisibilityAndHeaders(t *testing.T) {
	s := startNATS(t)
	var calls atomic.Int64
	echo := func(ctx context.Context, _ json.RawMessage) (any, error) {
		calls.Add(1)
		return map[string]string{"tenant": callbacks.RequestTenant(ctx), "job": callbacks.RequestJob(ctx)}, nil
	}
	serve(t, connect(t, s), callbacks.Service{Name: "private", Version: "1.0.0", Tenants: []string{"acme", "beta"},
		Callbacks: []callbacks.Def{{Name: "acme_only", Handler: echo}}})
	serve(t, connect(t, s), callbacks.Service{Name: "public", Version: "1.0.0",
		Callbacks: []callbacks.Def{{Name: "everyone", Handler: echo}}})
	serve(t, connect(t, s), callbacks.Service{Name: "nobody", Version: "1.0.0", Metadata: map[string]string{callbacks.MetaTenants: " ,Bad.Name"},
		Callbacks: []callbacks.Def{{Name: "closed", Handler: echo}}})
	c := catalogue.New(t.Context(), connect(t, s), fastOpts())
	defer c.Close()

	names := func(cbs sandbox.Callbacks) []string {
		specs, err := cbs.List(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, s := range specs {
			out = append(out, s.Name)
		}
		return out
	}
	if got := names(c.ForJob("acme", "j1")); !slices.Equal(got, []string{"acme_only", "everyone"}) {
		t.Errorf("acme sees %v", got)
	}
	if got := names(c.ForJob("other", "j1")); !slices.Equal(got, []string{"everyone"}) {
		t.Errorf("other sees %v", got)
	}
	before := calls.Load()
	for _, name := range []string{"acme_only", "closed"} {
		if _, err := c.ForJob("other", "j2").Invoke(t.Context(), name, json.RawMessage(`{}`)); !errors.Is(err, sandbox.ErrUnknownCallback) {
			t.Errorf("other calling %s: %v, want ErrUnknownCallback", name, err)
		}
	}
	if calls.Load() != before {
		t.Error("a refused call reached a service")
	}
	// The headers are the worker's, whatever the context carries.
	ctx := catalogue.WithHeaders(t.Context(), map[string][]string{callbacks.HeaderTenant: {"forged"}, callbacks.HeaderJob: {"forged"}})
	got, err := c.ForJob("acme", "job-7").Invoke(ctx, "acme_only", json.RawMessage(`{}`))
	if err != nil || string(got) != `{"job":"job-7","tenant":"acme"}` {
		t.Fatalf("acme calling acme_only: %s, %v", got, err)
	}
}

// A callback is accepted only on the subject of its own name: a service
// allowed to serve eryx.cb.clock.> cannot take over "add" by announcing
// it on eryx.cb.clock.add.
func TestCallbackOnlyOnItsOwnSubject(t *testing.T) {
	s := startNATS(t)
	serve(t, connect(t, s), toolsService())
	rnc := connect(t, s)
	rogue, err := micro.AddService(rnc, micro.Config{Name: "clock", Version: "99.0.0"})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = rogue.Stop() }()
	var stolen atomic.Int64
	if err := rogue.AddEndpoint("add", micro.HandlerFunc(func(r micro.Request) { stolen.Add(1); _ = r.Respond([]byte(`666`)) }),
		micro.WithEndpointSubject("eryx.cb.clock.add"),
		micro.WithEndpointMetadata(map[string]string{callbacks.MetaCallback: "add", callbacks.MetaSchema: `{}`})); err != nil {
		t.Fatal(err)
	}
	if err := rnc.Flush(); err != nil {
		t.Fatal(err)
	}
	opts := fastOpts()
	var ignored atomic.Int64
	opts.OnIgnore = func(reason string, n int) {
		if reason == catalogue.IgnoredSubject {
			ignored.Add(int64(n))
		}
	}
	c := catalogue.New(t.Context(), connect(t, s), opts)
	defer c.Close()
	entries, err := c.Entries(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.Name == "add" && (e.Subject != "eryx.cb.add" || e.Service != "tools") {
			t.Fatalf("add is served by %s on %s", e.Service, e.Subject)
		}
	}
	got, err := c.Invoke(t.Context(), "add", json.RawMessage(`{"x":1,"y":2}`))
	if err != nil || string(got) != "3" || stolen.Load() != 0 {
		t.Fatalf("add = %s, %v; rogue answered %d", got, err, stolen.Load())
	}
	if ignored.Load() != 1 {
		t.Errorf("ignored for their subject: %d, want 1", ignored.Load())
	}
}

// A schema that refers outside itself is not loaded (the worker reads no
// files and fetches no URLs for a service): the callback is ignored.
func TestSchemaReferencesAreNotLoaded(t *testing.T) {
	s := startNATS(t)
	serve(t, connect(t, s), callbacks.Service{Name: "refs", Version: "1.0.0", Callbacks: []callbacks.Def{
		{Name: "file_ref", Schema: json.RawMessage(`{"$ref":"file:///etc/passwd"}`), Handler: func(context.Context, json.RawMessage) (any, error) { return 1, nil }},
		{Name: "url_ref", Schema: json.RawMessage(`{"$ref":"https://example.com/s.json"}`), Handler: func(context.Context, json.RawMessage) (any, error) { return 1, nil }},
		{Name: "bad_type", Schema: json.RawMessage(`{"type":"nonsense"}`), Handler: func(context.Context, json.RawMessage) (any, error) { return 1, nil }},
		{Name: "fine", Schema: json.RawMessage(`{"type":"object","$defs":{"n":{"type":"integer"}},"properties":{"n":{"$ref":"#/$defs/n"}}}`), Handler: func(context.Context, json.RawMessage) (any, error) { return 1, nil }},
	}})
	opts := fastOpts()
	var ignored atomic.Int64
	opts.OnIgnore = func(reason string, n int) {
		if reason == catalogue.IgnoredSchema {
			ignored.Add(int64(n))
		}
	}
	c := catalogue.New(t.Context(), connect(t, s), opts)
	defer c.Close()
	specs, err := c.List(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(specs) != 1 || specs[0].Name != "fine" || ignored.Load() != 3 {
		t.Fatalf("specs %v, ignored %d; want only fine, 3 ignored", specs, ignored.Load())
	}
	if _, err := c.Invoke(t.Context(), "fine", json.RawMessage(`{"n":"x"}`)); !errors.Is(err, catalogue.ErrInvalidArguments) {
		t.Fatalf("internal $ref not applied: %v", err)
	}
}
