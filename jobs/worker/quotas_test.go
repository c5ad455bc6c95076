package worker_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/eryx-dev/eryx/auth"
	"github.com/eryx-dev/eryx/jobs"
	"github.com/eryx-dev/eryx/jobs/worker"
)

// fixedQuotas gives each tenant its quotas (defaults for the others).
type fixedQuotas map[string]auth.Quotas

func (f fixedQuotas) Quotas(_ context.Context, tenant string) (auth.Quotas, error) {
	return f[tenant].WithDefaults(), nil
}

func TestQueueFullRefusedAtSubmission(t *testing.T) {
	url := startServer(t)
	nc := connect(t, url)
	cfg := testConfig("full")
	cfg.Topology.MaxQueuedPerTenant = 3
	newWorker(t, nc, cfg) // streams, no Run: jobs stay queued
	a, b := tenantClient(t, nc, "a"), tenantClient(t, nc, "b")
	ctx := context.Background()
	for range 3 {
		if _, err := a.Submit(ctx, "", &jobs.Job{Code: "pass"}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := a.Submit(ctx, "", &jobs.Job{Code: "pass"}); !errors.Is(err, jobs.ErrQueueFull) {
		t.Fatalf("4th job of a full queue: %v, want ErrQueueFull", err)
	}
	// Another tenant's queue is its own.
	if _, err := b.Submit(ctx, "", &jobs.Job{Code: "pass"}); err != nil {
		t.Fatalf("tenant b: %v", err)
	}
}

func quotaRejected(t *testing.T, res *jobs.Result, limit string) {
	t.Helper()
	if res.Status != jobs.StatusRejected || res.Code != jobs.CodeQuotaExceeded || res.Limit != limit {
		t.Fatalf("want rejected quota_exceeded %s, got %s %s %q: %s", limit, res.Status, res.Code, res.Limit, res.Reason)
	}
}

func TestQuotaSubmissionRate(t *testing.T) {
	url := startServer(t)
	nc := connect(t, url)
	cfg := testConfig("rate")
	cfg.Quotas = fixedQuotas{"a": {SubmissionsPerSecond: 1}}
	w := newWorker(t, nc, cfg)
	a, b := tenantClient(t, nc, "a"), tenantClient(t, nc, "b")
	ctx := context.Background()
	const n = 20
	ids := make([]string, n)
	for i := range ids {
		sub, err := a.Submit(ctx, "", &jobs.Job{Code: "pass"})
		if err != nil {
			t.Fatal(err)
		}
		ids[i] = sub.ID
	}
	run(t, w)
	admitted, rejected := 0, 0
	for i, id := range ids {
		res := waitResult(t, a, id)
		switch res.Status {
		case jobs.StatusOK:
			admitted++
		default:
			quotaRejected(t, res, worker.QuotaSubmissionRate)
			if res.RetryAfterMS <= 0 {
				t.Fatalf("job %d: no retry_after_ms", i)
			}
			rejected++
		}
	}
	// Two slots admit concurrently, so which job gets the burst's token
	// is not fixed; that one does and that most do not is.
	if admitted == 0 || rejected == 0 {
		t.Fatalf("%d jobs submitted back to back at 1/s: %d admitted, %d rejected", n, admitted, rejected)
	}
	t.Logf("admitted %d, rejected %d", admitted, rejected)
	// Another tenant is not affected.
	if res := runJob(t, b, &jobs.Job{Code: "pass"}, jobs.Handlers{}); res.Status != jobs.StatusOK {
		t.Fatalf("tenant b: %s %s", res.Status, res.Reason)
	}
}

func TestQuotaMemoryPerJob(t *testing.T) {
	url := startServer(t)
	nc := connect(t, url)
	cfg := testConfig("mem")
	cfg.Quotas = fixedQuotas{"a": {MemoryPerJob: 64 << 20}, "tiny": {MemoryPerJob: 16 << 20}}
	startWorker(t, nc, cfg)
	a, b := tenantClient(t, nc, "a"), tenantClient(t, nc, "b")
	// A quota below what the interpreter needs rejects, never loops.
	quotaRejected(t, runJob(t, tenantClient(t, nc, "tiny"), &jobs.Job{Code: "pass"}, jobs.Handlers{}), worker.QuotaMemoryPerJob)
	res := runJob(t, a, &jobs.Job{Code: "pass", MemoryMB: 100}, jobs.Handlers{})
	quotaRejected(t, res, worker.QuotaMemoryPerJob)
	// Without memory_mb the job gets the tenant's 64 MiB, not the
	// worker's 128: 80 MiB do not fit.
	const grab = "x = bytearray(80 << 20)\nprint('got it')"
	res = runJob(t, a, &jobs.Job{Code: grab}, jobs.Handlers{})
	if res.Status != jobs.StatusError || res.Error == nil || res.Error.Type != "MemoryError" {
		t.Fatalf("80 MiB under a 64 MiB quota: %s %+v", res.Status, res.Error)
	}
	if res := runJob(t, b, &jobs.Job{Code: grab}, jobs.Handlers{}); res.Status != jobs.StatusOK {
		t.Fatalf("tenant b (worker's 128 MiB): %s %+v", res.Status, res.Error)
	}
}

func TestQuotaExecSecondsPerHour(t *testing.T) {
	url := startServer(t)
	nc := connect(t, url)
	cfg := testConfig("exec")
	cfg.Quotas = fixedQuotas{"a": {ExecSecondsPerHour: 1}}
	startWorker(t, nc, cfg)
	a, b := tenantClient(t, nc, "a"), tenantClient(t, nc, "b")
	// Uses more than the hour's one second, whatever the machine's speed.
	if res := runJob(t, a, &jobs.Job{Code: "import time\ntime.sleep(1.2)"}, jobs.Handlers{}); res.Status != jobs.StatusOK {
		t.Fatalf("first job: %s %s", res.Status, res.Reason)
	}
	res := runJob(t, a, &jobs.Job{Code: "pass"}, jobs.Handlers{})
	quotaRejected(t, res, worker.QuotaExecSecondsHour)
	if res.RetryAfterMS <= 0 || res.RetryAfterMS > time.Hour.Milliseconds() {
		t.Fatalf("retry_after_ms %d", res.RetryAfterMS)
	}
	if res := runJob(t, b, &jobs.Job{Code: "pass"}, jobs.Handlers{}); res.Status != jobs.StatusOK {
		t.Fatalf("tenant b: %s %s", res.Status, res.Reason)
	}
}

// TestQuotaMaxRunning: with max_running 1, a tenant's second job waits
// while its first runs (it is not rejected), and another tenant's job
// takes the free slot meanwhile.
func TestQuotaMaxRunning(t *testing.T) {
	url := startServer(t)
	nc := connect(t, url)
	cfg := testConfig("running")
	cfg.Quotas = fixedQuotas{"a": {MaxRunning: 1}}
	startWorker(t, nc, cfg)
	a, b := tenantClient(t, nc, "a"), tenantClient(t, nc, "b")
	ctx := context.Background()
	out := newOutput()
	watch, err := a.Watch(ctx, "a-long")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(watch.Stop)
	long := make(chan *jobs.Result, 1)
	go func() { r, _ := watch.Wait(ctx, out.handlers()); long <- r }()
	if _, err := a.Submit(ctx, "", &jobs.Job{ID: "a-long", Code: "import time\nprint('running', flush=True)\nwhile True:\n    time.sleep(0.02)"}); err != nil {
		t.Fatal(err)
	}
	waitFirstOutput(t, out)
	if _, err := a.Submit(ctx, "", &jobs.Job{ID: "a-second", Code: "pass"}); err != nil {
		t.Fatal(err)
	}
	if res := runJob(t, b, &jobs.Job{Code: "pass"}, jobs.Handlers{}); res.Status != jobs.StatusOK {
		t.Fatalf("tenant b: %s", res.Status)
	}
	// b's job ran in the free slot; a's second job did not.
	if _, err := a.Lookup(ctx, "a-second"); !errors.Is(err, jobs.ErrNoResult) {
		t.Fatalf("a's second job ran beside its first (max_running 1): %v", err)
	}
	if err := a.Cancel(ctx, "a-long", ""); err != nil {
		t.Fatal(err)
	}
	if res := waitResult(t, a, "a-second"); res.Status != jobs.StatusOK {
		t.Fatalf("a's second job: %s %s", res.Status, res.Reason)
	}
	<-long
}

// Without eryx-auth's bucket (one operator's own jobs, as with the
// embedded server) no quotas apply: a burst far above the tenant default
// of 20 submissions a second all runs.
func TestNoQuotasWithoutAuthBucket(t *testing.T) {
	url := startServer(t)
	nc := connect(t, url)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	q, err := worker.StoreQuotas(js, jobs.DefaultPrefix).Quotas(t.Context(), jobs.DefaultTenant)
	if err != nil || q != auth.NoQuotas() {
		t.Fatalf("quotas %+v, %v; want none", q, err)
	}
	cfg := testConfig("w1")
	cfg.Quotas = worker.StoreQuotas(js, jobs.DefaultPrefix)
	startWorker(t, nc, cfg)
	c := newClient(t, connect(t, url))
	const n = 60
	ids := make([]string, n)
	for i := range n {
		ids[i] = fmt.Sprintf("burst-%d", i)
		if _, err := c.Submit(t.Context(), "", &jobs.Job{ID: ids[i], Code: "pass"}); err != nil {
			t.Fatal(err)
		}
	}
	for _, id := range ids {
		if res := waitResult(t, c, id); res.Status != jobs.StatusOK {
			t.Fatalf("%s: %s %s %s", id, res.Status, res.Code, res.Reason)
		}
	}
}
