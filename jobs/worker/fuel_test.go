package worker_test

import (
	"fmt"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/eryx-dev/eryx/jobs"
	"github.com/eryx-dev/eryx/telemetry"
)

// TestFuel runs the same job on two workers: the fuel it reports is the
// same, and a limit below it ends the job with fuel_exhausted on either.
func TestFuel(t *testing.T) {
	nc := connect(t, startServer(t))
	cfg := testConfig("w1")
	cfg.Policy.MaxFuel = 1 << 40
	metrics := telemetry.NewMetrics()
	cfg.Observer = metrics
	startWorker(t, nc, cfg)
	c := newClient(t, nc)
	const code = "total = 0\nfor i in range(20000):\n    total += i * i\nprint(total)"

	first := runJob(t, c, &jobs.Job{Code: code}, jobs.Handlers{})
	if first.Status != jobs.StatusOK || first.FuelConsumed == 0 {
		t.Fatalf("%+v", first)
	}
	cfg2 := testConfig("w2")
	cfg2.Policy.MaxFuel = 1 << 40
	cfg2.Observer = metrics
	startWorker(t, nc, cfg2)
	seen := map[string]bool{}
	for i := 0; i < 6; i++ {
		res := runJob(t, c, &jobs.Job{Code: code}, jobs.Handlers{})
		seen[res.Worker] = true
		if res.Status != jobs.StatusOK || res.FuelConsumed != first.FuelConsumed {
			t.Fatalf("run %d on %s: %s after %d fuel, first run %d", i, res.Worker, res.Status, res.FuelConsumed, first.FuelConsumed)
		}
	}
	t.Logf("fuel %d on workers %v", first.FuelConsumed, seen)

	exact := runJob(t, c, &jobs.Job{Code: code, Fuel: first.FuelConsumed}, jobs.Handlers{})
	if exact.Status != jobs.StatusOK {
		t.Fatalf("with exactly the fuel it needs: %+v", exact)
	}
	short := runJob(t, c, &jobs.Job{Code: code, Fuel: first.FuelConsumed / 2}, jobs.Handlers{})
	if short.Status != jobs.StatusFuelExhausted || short.Error == nil || short.Error.Type != "eryx.FuelExhausted" ||
		short.Stdout != "" || short.FuelConsumed <= first.FuelConsumed/2 {
		t.Fatalf("with half the fuel: %+v", short)
	}
	// The worker keeps serving, and counts the stop.
	if again := runJob(t, c, &jobs.Job{Code: code}, jobs.Handlers{}); again.Status != jobs.StatusOK {
		t.Fatalf("after running out of fuel: %+v", again)
	}
	rec := httptest.NewRecorder()
	metrics.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if want := fmt.Sprintf(`%s{limit="fuel"}`, telemetry.MetricLimitExceeded); !strings.Contains(rec.Body.String(), want) {
		t.Errorf("metrics lack %s", want)
	}
	over := runJob(t, c, &jobs.Job{Code: code, Fuel: 1<<40 + 1}, jobs.Handlers{})
	if over.Status != jobs.StatusRejected || over.Code != jobs.CodeInvalidLimits {
		t.Fatalf("above the maximum: %+v", over)
	}
}
