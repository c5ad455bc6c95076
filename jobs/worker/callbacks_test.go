package worker_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/eryx-dev/eryx/callbacks"
	"github.com/eryx-dev/eryx/callbacks/catalogue"
	"github.com/eryx-dev/eryx/jobs"
)

// TestCallbacksOverNATS runs jobs that call a Go callback service through
// the worker's catalogue, with the job's allow-list applied.
func TestCallbacksOverNATS(t *testing.T) {
	url := startServer(t)
	svcConn := connect(t, url)
	srv, err := callbacks.Start(context.Background(), svcConn, callbacks.Service{
		Name: "math",
		Callbacks: []callbacks.Def{{
			Name:        "add",
			Description: "adds two integers",
			Schema:      json.RawMessage(`{"type":"object","properties":{"a":{"type":"integer"},"b":{"type":"integer"}},"required":["a","b"]}`),
			Handler: func(_ context.Context, args json.RawMessage) (any, error) {
				var in struct{ A, B int }
				if err := json.Unmarshal(args, &in); err != nil {
					return nil, err
				}
				return in.A + in.B, nil
			},
		}, {
			Name: "fail",
			Handler: func(context.Context, json.RawMessage) (any, error) {
				return nil, callbacks.Errorf("ValueError", "no good")
			},
		}},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Stop() })

	nc := connect(t, url)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	cfg := testConfig("w1")
	cfg.Callbacks = catalogue.New(ctx, nc, catalogue.Options{RefreshInterval: -1, Logger: testLogger()})
	startWorker(t, nc, cfg)
	c := newClient(t, connect(t, url))

	tests := []struct {
		name      string
		callbacks []string
		code      string
		value     string
	}{
		{"call", nil, "result = await add(a=2, b=40)", "42"},
		{"positional", nil, "result = await add(1, 2)", "3"},
		{"service error is a Python exception", nil,
			"try:\n    await fail()\nexcept ValueError as e:\n    result = str(e)", `"no good"`},
		{"allowed by the job", []string{"add"}, "result = await add(a=1, b=1)", "2"},
		{"not in the job's allow-list", []string{"add"},
			"try:\n    await invoke('fail')\nexcept NameError:\n    result = 'hidden'", `"hidden"`},
		{"no callbacks at all", []string{},
			"try:\n    await add(a=1, b=1)\nexcept NameError:\n    result = 'none'", `"none"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := runJob(t, c, &jobs.Job{Code: tt.code, Callbacks: tt.callbacks}, jobs.Handlers{})
			if res.Status != jobs.StatusOK || string(res.Result) != tt.value {
				t.Fatalf("%s result %s (error %+v, stderr %q)", res.Status, res.Result, res.Error, res.Stderr)
			}
		})
	}

	// Trace events carry the callback's timing.
	traces := 0
	start := time.Now()
	res := runJob(t, c, &jobs.Job{Code: "x = await add(a=1, b=2)", Trace: true}, jobs.Handlers{
		Trace: func(ev jobs.TraceEvent) { traces++ },
	})
	if res.Status != jobs.StatusOK || traces == 0 {
		t.Fatalf("%s with %d trace events", res.Status, traces)
	}
	t.Logf("traced job with a callback: %d events in %v", traces, time.Since(start).Round(time.Millisecond))
}
