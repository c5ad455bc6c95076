package worker_test

import (
	"context"
	"errors"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/eryx-dev/eryx/jobs"
	"github.com/eryx-dev/eryx/jobs/worker"
)

// TestDrainsDoNotSpendTheDeliveryBudget: a job interrupted by more drains
// than its delivery budget (MaxDeliver 1) is never dead-lettered; it
// finishes on the worker that lets it, and its drains count is removed.
func TestDrainsDoNotSpendTheDeliveryBudget(t *testing.T) {
	url := startServer(t)
	nc := connect(t, url)
	c := newClient(t, nc)
	js, _ := jetstream.New(nc)
	ctx := context.Background()
	cfg := func(id string) func() *runningWorker {
		return func() *runningWorker {
			cfg := testConfig(id)
			cfg.MaxDeliver = 1
			cfg.DrainTimeout = 50 * time.Millisecond
			cfg.Policy.Timeout = 60 * time.Second
			return startWorker(t, connect(t, url), cfg)
		}
	}
	// The job runs long enough that every drain below interrupts it.
	const code = "import time\nprint('started', flush=True)\ntime.sleep(2)\nprint('done')"
	w := cfg("drained-0")()
	sub, err := c.Submit(ctx, "", &jobs.Job{ID: "long", Code: code})
	if err != nil {
		t.Fatal(err)
	}
	const drains = 4
	for i := 1; i <= drains; i++ {
		waitFor(t, "the job to start again", func() bool { return lastAttempt(t, js, "long") >= i })
		if err := w.stop(); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Lookup(ctx, "long"); !errors.Is(err, jobs.ErrNoResult) {
			t.Fatalf("after drain %d the job has a result (%v): it was dead-lettered or finished early", i, err)
		}
		if i < drains {
			w = cfg("drained-" + itoa(uint64(i)))()
		}
	}
	kv, err := js.KeyValue(ctx, "ERYX_DRAINS")
	if err != nil {
		t.Fatal(err)
	}
	e, err := kv.Get(ctx, itoa(sub.Sequence))
	if err != nil || string(e.Value()) != itoa(drains) {
		t.Fatalf("drains count %v %v, want %d", e, err, drains)
	}

	final := testConfig("finisher")
	final.MaxDeliver = 1
	startWorker(t, connect(t, url), final)
	res := waitResult(t, c, "long")
	if res.Status != jobs.StatusOK || res.Attempt != drains+1 || res.Worker != "finisher" {
		t.Fatalf("result %s/%s attempt %d by %s, want ok, attempt %d, finisher", res.Status, res.Code, res.Attempt, res.Worker, drains+1)
	}
	if n := streamInfo(t, js, "ERYX_DLQ").State.Msgs; n != 0 {
		t.Fatalf("%d dead letters", n)
	}
	waitQueueEmpty(t, js)
	waitFor(t, "the drains count to be removed", func() bool {
		_, err := kv.Get(ctx, itoa(sub.Sequence))
		return errors.Is(err, jetstream.ErrKeyNotFound)
	})
}

// TestCrashesStillSpendTheBudgetBetweenDrains: drains are not counted,
// crashes are: a job that crashes its worker MaxDeliver times is
// dead-lettered even when drains came in between.
func TestCrashesStillSpendTheBudgetBetweenDrains(t *testing.T) {
	url := startServer(t)
	nc := connect(t, url)
	c := newClient(t, nc)
	js, _ := jetstream.New(nc)
	ctx := context.Background()
	// Deliveries 1 and 3 crash, 2 is drained; with MaxDeliver 2, delivery
	// 4 finds two failures and dead-letters the job.
	newCfg := func(id string) worker.Config {
		cfg := testConfig(id)
		cfg.MaxDeliver = 2
		cfg.AckWait = 500 * time.Millisecond
		cfg.DrainTimeout = 50 * time.Millisecond
		cfg.Policy.Timeout = 60 * time.Second
		cfg.SimulateCrash = func(job *jobs.Job, attempt int) bool { return attempt == 1 || attempt == 3 }
		return cfg
	}
	w := startWorker(t, connect(t, url), newCfg("w1"))
	if _, err := c.Submit(ctx, "", &jobs.Job{ID: "unlucky", Code: "import time\nprint('started', flush=True)\ntime.sleep(30)"}); err != nil {
		t.Fatal(err)
	}
	// Delivery 2 is the first to run (and print).
	waitFor(t, "the second delivery to run", func() bool { return lastAttempt(t, js, "unlucky") >= 2 })
	if err := w.stop(); err != nil {
		t.Fatal(err)
	}
	startWorker(t, connect(t, url), newCfg("w2"))
	res := waitResult(t, c, "unlucky")
	if res.Status != jobs.StatusRejected || res.Code != jobs.CodeDeadLetter || res.Attempt != 4 {
		t.Fatalf("result %s/%s attempt %d, want a dead letter at delivery 4", res.Status, res.Code, res.Attempt)
	}
	dead, err := js.Stream(ctx, "ERYX_DLQ")
	if err != nil {
		t.Fatal(err)
	}
	m, err := dead.GetLastMsgForSubject(ctx, "eryx.dlq.default.default")
	if err != nil {
		t.Fatal(err)
	}
	if m.Header.Get(jobs.HeaderDLQDeliveries) != "2" {
		t.Errorf("dead letter counts %q failed deliveries, want 2", m.Header.Get(jobs.HeaderDLQDeliveries))
	}
	waitQueueEmpty(t, js)
}

// TestSecondDeliveryOfARunningJobIsNotAcked: a delivery whose heartbeats
// stopped (its worker cut off from the server, say) is redelivered, here
// to the same worker while the first run goes on. Acking that second
// delivery would take the job off the queue: if the first run then dies,
// the job is lost. The second delivery is left alone and spends no
// budget, and the job gets its one result from a later delivery.
func TestSecondDeliveryOfARunningJobIsNotAcked(t *testing.T) {
	url := startServer(t)
	nc := connect(t, url)
	cfg := testConfig("w1")
	cfg.Concurrency = 2
	cfg.MaxDeliver = 2 // the stalled run spends one, the second delivery none
	cfg.AckWait = 300 * time.Millisecond
	cfg.SimulateStall = func(job *jobs.Job, attempt int) bool { return attempt == 1 }
	startWorker(t, nc, cfg)
	c := newClient(t, nc)
	js, _ := jetstream.New(nc)
	ctx := context.Background()
	// The first run outlives several AckWaits, then is abandoned.
	if _, err := c.Submit(ctx, "", &jobs.Job{ID: "stalled", Code: "import time\ntime.sleep(1.5)\nprint('ran')"}); err != nil {
		t.Fatal(err)
	}
	res := waitResult(t, c, "stalled")
	if res.Status != jobs.StatusOK || res.Attempt < 3 {
		t.Fatalf("result %s/%s attempt %d, want ok after at least 3 deliveries", res.Status, res.Code, res.Attempt)
	}
	waitQueueEmpty(t, js)
	if n := countMessages(t, js, "eryx.t.default.job.stalled.result"); n != 1 {
		t.Errorf("%d results", n)
	}
	if n := streamInfo(t, js, "ERYX_DLQ").State.Msgs; n != 0 {
		t.Errorf("%d dead letters", n)
	}
}

// lastAttempt is the attempt of job id's last stdout event (0: none).
func lastAttempt(t *testing.T, js jetstream.JetStream, id string) int {
	t.Helper()
	s, err := js.Stream(context.Background(), "ERYX_EVENTS")
	if err != nil {
		t.Fatal(err)
	}
	m, err := s.GetLastMsgForSubject(context.Background(), "eryx.t.default.job."+id+".stdout")
	if err != nil {
		return 0
	}
	n, _ := strconv.Atoi(m.Header.Get(jobs.HeaderAttempt))
	return n
}
