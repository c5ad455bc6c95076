package telemetry

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(body)
}

func TestReadiness(t *testing.T) {
	pass := func(context.Context) error { return nil }
	fail := func(context.Context) error { return errors.New("not connected") }
	tests := []struct {
		name     string
		checks   map[string]Check
		want     int
		contains []string
	}{
		{"no checks is not ready", nil, http.StatusServiceUnavailable, []string{"no readiness checks registered", "not ready"}},
		{"all pass", map[string]Check{"nats": pass, "pool": pass}, http.StatusOK, []string{"[+]nats ok", "[+]pool ok", "ready"}},
		{"one fails", map[string]Check{"nats": fail, "pool": pass}, http.StatusServiceUnavailable, []string{"[-]nats failed: not connected", "[+]pool ok"}},
		{"panic is a failure", map[string]Check{"pool": func(context.Context) error { panic("bug") }}, http.StatusServiceUnavailable, []string{"[-]pool failed: check panicked: bug"}},
		{"slow check times out", map[string]Check{"nats": func(ctx context.Context) error {
			<-ctx.Done()
			return ctx.Err()
		}}, http.StatusServiceUnavailable, []string{"[-]nats failed: context deadline exceeded"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := NewHealth()
			h.Timeout = 50 * time.Millisecond
			for name, c := range tc.checks {
				h.SetCheck(name, c)
			}
			srv := httptest.NewServer(NewMux(h, nil))
			defer srv.Close()

			code, body := get(t, srv.URL+PathReadyz)
			if code != tc.want {
				t.Errorf("/readyz = %d, want %d\n%s", code, tc.want, body)
			}
			for _, s := range tc.contains {
				if !strings.Contains(body, s) {
					t.Errorf("/readyz body lacks %q:\n%s", s, body)
				}
			}
			// Liveness never depends on the checks.
			if code, _ := get(t, srv.URL+PathLivez); code != http.StatusOK {
				t.Errorf("/livez = %d", code)
			}
		})
	}
}

// TestReadinessFlips: readiness follows the checks' state over time, as
// when NATS disconnects and reconnects or the pool warms up.
func TestReadinessFlips(t *testing.T) {
	var connected, warm atomic.Bool
	h := NewHealth()
	h.SetCheck("nats", func(context.Context) error {
		if !connected.Load() {
			return errors.New("disconnected")
		}
		return nil
	})
	h.SetCheck("pool", func(context.Context) error {
		if !warm.Load() {
			return errors.New("cold")
		}
		return nil
	})
	srv := httptest.NewServer(NewMux(h, NewMetrics()))
	defer srv.Close()

	steps := []struct {
		connected, warm bool
		want            int
	}{
		{false, false, http.StatusServiceUnavailable},
		{true, false, http.StatusServiceUnavailable},
		{true, true, http.StatusOK},
		{false, true, http.StatusServiceUnavailable},
		{true, true, http.StatusOK},
	}
	for i, s := range steps {
		connected.Store(s.connected)
		warm.Store(s.warm)
		if code, body := get(t, srv.URL+PathReadyz); code != s.want {
			t.Errorf("step %d (nats %v, pool %v): /readyz = %d, want %d\n%s", i, s.connected, s.warm, code, s.want, body)
		}
	}

	h.SetCheck("pool", nil) // removing a check
	connected.Store(true)
	if ok, res := h.Ready(context.Background()); !ok || len(res) != 1 {
		t.Errorf("after removing pool: ready %v, results %v", ok, res)
	}
}

func TestServer(t *testing.T) {
	h := NewHealth()
	h.SetCheck("nats", func(context.Context) error { return nil })
	s, err := Listen("127.0.0.1:0", NewMux(h, NewMetrics()))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve() }()

	for _, path := range []string{PathLivez, PathReadyz, PathMetrics} {
		if code, _ := get(t, "http://"+s.Addr()+path); code != http.StatusOK {
			t.Errorf("GET %s = %d", path, code)
		}
	}
	if code, _ := get(t, "http://"+s.Addr()+"/nope"); code != http.StatusNotFound {
		t.Errorf("GET /nope = %d", code)
	}

	// The port is taken: a second Listen fails at once.
	if _, err := Listen(s.Addr(), http.NotFoundHandler()); err == nil {
		t.Error("second Listen on the same port succeeded")
	}

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Errorf("Serve after Shutdown: %v", err)
	}
}
