package main

import (
	"context"
	"encoding/json"
	"math"
	"sort"
	"sync"
	"time"

	"github.com/eryx-dev/eryx/callbacks"
)

// newService returns the example callbacks. Each shows one thing: a
// plain result (get_time), raw arguments (echo), typed arguments and a
// typed Python exception (add, divide), state behind a namespace (kv.*),
// and the caller's deadline reaching the handler (sleep).
func newService(name string) callbacks.Service {
	kv := &memKV{m: map[string]json.RawMessage{}}
	return callbacks.Service{
		Name:        name,
		Version:     "1.0.0",
		Description: "eryx example callbacks",
		Callbacks: []callbacks.Def{
			{
				Name:        "get_time",
				Description: "Current time, as RFC 3339 text in the given IANA time zone (default UTC) and as Unix seconds.",
				Schema:      json.RawMessage(`{"type":"object","properties":{"tz":{"type":"string","description":"IANA time zone, e.g. Europe/Paris"}}}`),
				Handler: callbacks.Typed(func(_ context.Context, a struct {
					TZ string `json:"tz"`
				}) (map[string]any, error) {
					loc := time.UTC
					if a.TZ != "" {
						var err error
						if loc, err = time.LoadLocation(a.TZ); err != nil {
							return nil, callbacks.Errorf("ValueError", "unknown time zone %q", a.TZ)
						}
					}
					now := time.Now()
					return map[string]any{"time": now.In(loc).Format(time.RFC3339), "unix": float64(now.UnixMicro()) / 1e6}, nil
				}),
			},
			{
				Name:        "echo",
				Description: "Returns its keyword arguments as a dict.",
				Schema:      json.RawMessage(`{"type":"object","additionalProperties":true}`),
				Handler:     func(_ context.Context, args json.RawMessage) (any, error) { return args, nil },
			},
			{
				Name:        "add",
				Description: "Sum of two numbers.",
				Schema:      json.RawMessage(`{"type":"object","properties":{"a":{"type":"number"},"b":{"type":"number"}},"required":["a","b"]}`),
				Handler: callbacks.Typed(func(_ context.Context, a struct{ A, B float64 }) (float64, error) {
					return a.A + a.B, nil
				}),
			},
			{
				Name:        "divide",
				Description: "a / b; raises ZeroDivisionError when b is 0.",
				Schema:      json.RawMessage(`{"type":"object","properties":{"a":{"type":"number"},"b":{"type":"number"}},"required":["a","b"]}`),
				Handler: callbacks.Typed(func(_ context.Context, a struct{ A, B float64 }) (float64, error) {
					if a.B == 0 {
						return 0, callbacks.Errorf("ZeroDivisionError", "division by zero")
					}
					return a.A / a.B, nil
				}),
			},
			{
				Name:        "kv.set",
				Description: "Stores a JSON value under a key, in the service's memory (shared by all jobs).",
				Schema:      json.RawMessage(`{"type":"object","properties":{"key":{"type":"string"},"value":{}},"required":["key","value"]}`),
				Handler: callbacks.Typed(func(_ context.Context, a struct {
					Key   string          `json:"key"`
					Value json.RawMessage `json:"value"`
				}) (any, error) {
					kv.set(a.Key, a.Value)
					return nil, nil
				}),
			},
			{
				Name:        "kv.get",
				Description: "Returns the value stored under a key; raises KeyError when there is none.",
				Schema:      json.RawMessage(`{"type":"object","properties":{"key":{"type":"string"}},"required":["key"]}`),
				Handler: callbacks.Typed(func(_ context.Context, a struct {
					Key string `json:"key"`
				}) (json.RawMessage, error) {
					v, ok := kv.get(a.Key)
					if !ok {
						return nil, callbacks.Errorf("KeyError", "%q", a.Key)
					}
					return v, nil
				}),
			},
			{
				Name:        "kv.keys",
				Description: "Lists the stored keys, sorted.",
				Schema:      json.RawMessage(`{"type":"object","properties":{}}`),
				Handler:     func(context.Context, json.RawMessage) (any, error) { return kv.keys(), nil },
			},
			{
				Name:        "sleep",
				Description: "Waits the given seconds (at most 60) and returns them; stops early when the caller gives up.",
				Schema:      json.RawMessage(`{"type":"object","properties":{"seconds":{"type":"number","minimum":0,"maximum":60}},"required":["seconds"]}`),
				Handler: callbacks.Typed(func(ctx context.Context, a struct{ Seconds float64 }) (float64, error) {
					if a.Seconds < 0 || a.Seconds > 60 || math.IsNaN(a.Seconds) {
						return 0, callbacks.Errorf("ValueError", "seconds must be within [0, 60]")
					}
					select {
					case <-time.After(time.Duration(a.Seconds * float64(time.Second))):
						return a.Seconds, nil
					case <-ctx.Done():
						return 0, callbacks.Errorf("TimeoutError", "sleep interrupted: %v", ctx.Err())
					}
				}),
			},
		},
	}
}

type memKV struct {
	mu sync.Mutex
	m  map[string]json.RawMessage
}

func (k *memKV) set(key string, v json.RawMessage) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.m[key] = v
}

func (k *memKV) get(key string) (json.RawMessage, bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	v, ok := k.m[key]
	return v, ok
}

func (k *memKV) keys() []string {
	k.mu.Lock()
	defer k.mu.Unlock()
	out := make([]string, 0, len(k.m))
	for key := range k.m {
		out = append(out, key)
	}
	sort.Strings(out)
	return out
}
