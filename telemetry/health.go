package telemetry

import (
	"context"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"
)

// Check reports whether one condition for readiness holds; a nil error
// means it does. It should return promptly and honour ctx.
type Check func(ctx context.Context) error

// Health answers Kubernetes' liveness and readiness probes.
//
// Liveness only says the process is serving HTTP: a worker that lost NATS
// should wait to reconnect, not be restarted, since restarting every pod at
// once during a NATS outage only adds load. Readiness is the conjunction of
// named checks the worker registers, such as "nats" (connected) and "pool"
// (warm); with no checks registered it is not ready, so a worker that has not
// finished starting is never reported ready by accident.
type Health struct {
	// Timeout bounds each probe's run of all checks; zero means 5s. Keep it
	// below the probe's timeoutSeconds.
	Timeout time.Duration

	mu     sync.RWMutex
	checks map[string]Check
}

// NewHealth returns a Health with no checks registered.
func NewHealth() *Health {
	return &Health{checks: make(map[string]Check)}
}

// SetCheck registers (or replaces) the readiness check called name.
// A nil check removes it.
func (h *Health) SetCheck(name string, check Check) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if check == nil {
		delete(h.checks, name)
		return
	}
	h.checks[name] = check
}

// CheckResult is the outcome of one named check.
type CheckResult struct {
	Name string
	Err  error
}

// Ready runs every check, in name order, and reports whether all passed
// along with each outcome.
func (h *Health) Ready(ctx context.Context) (bool, []CheckResult) {
	// Run checks outside the lock: a slow check must not block SetCheck.
	h.mu.RLock()
	checks := maps.Clone(h.checks)
	h.mu.RUnlock()
	names := slices.Sorted(maps.Keys(checks))

	ok := len(names) > 0
	results := make([]CheckResult, 0, len(names))
	for _, name := range names {
		err := runCheck(ctx, checks[name])
		if err != nil {
			ok = false
		}
		results = append(results, CheckResult{Name: name, Err: err})
	}
	return ok, results
}

// runCheck turns a panicking check into a failed one: a bug in one check
// should make the pod unready, not take the health server down.
func runCheck(ctx context.Context, c Check) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("check panicked: %v", r)
		}
	}()
	return c(ctx)
}

// LivezHandler answers 200 whenever the process can serve HTTP.
func (h *Health) LivezHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		_, _ = w.Write([]byte("ok\n"))
	})
}

// ReadyzHandler answers 200 when every check passes and 503 otherwise, with
// one line per check ("[+]nats ok", "[-]pool failed: ...") so `curl` shows
// why a pod is not ready.
func (h *Health) ReadyzHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		timeout := h.Timeout
		if timeout <= 0 {
			timeout = 5 * time.Second
		}
		ctx, cancel := context.WithTimeout(r.Context(), timeout)
		defer cancel()
		ok, results := h.Ready(ctx)

		var b strings.Builder
		for _, res := range results {
			if res.Err == nil {
				fmt.Fprintf(&b, "[+]%s ok\n", res.Name)
			} else {
				fmt.Fprintf(&b, "[-]%s failed: %v\n", res.Name, res.Err)
			}
		}
		if len(results) == 0 {
			b.WriteString("[-]no readiness checks registered\n")
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		if ok {
			b.WriteString("ready\n")
			w.WriteHeader(http.StatusOK)
		} else {
			b.WriteString("not ready\n")
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		_, _ = w.Write([]byte(b.String()))
	})
}
