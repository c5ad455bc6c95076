package worker_test

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/eryx-dev/eryx/internal/check"
	"github.com/eryx-dev/eryx/jobs"
)

// countMessages counts the events stream's messages on subject.
func countMessages(t *testing.T, js jetstream.JetStream, subject string) uint64 {
	t.Helper()
	stream := "ERYX_EVENTS"
	if strings.HasSuffix(subject, ".result") {
		stream = "ERYX_RESULTS"
	}
	s, err := js.Stream(context.Background(), stream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(context.Background(), jetstream.WithSubjectFilter(subject))
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Subjects[subject]
}

func TestDuplicateJobRunsOnce(t *testing.T) {
	nc := connect(t, startServer(t))
	startWorker(t, nc, testConfig("w1"))
	c := newClient(t, nc)
	js, _ := jetstream.New(nc)
	ctx := context.Background()

	job := &jobs.Job{ID: "dup", Code: "print('ran')"}
	res := runJob(t, c, job, jobs.Handlers{})
	if res.Status != jobs.StatusOK {
		t.Fatalf("status %s", res.Status)
	}

	// Within the deduplication window the server drops the copy.
	sub, err := c.Submit(ctx, "", &jobs.Job{ID: "dup", Code: "print('ran')"})
	if err != nil {
		t.Fatal(err)
	}
	if !sub.Duplicate {
		t.Error("second submission within the window not flagged as a duplicate")
	}

	// Past the window (simulated by a message without Nats-Msg-Id, which
	// the stream does not deduplicate), the worker finds the existing
	// result and does not run the job again.
	msg := &nats.Msg{Subject: "eryx.jobs.default.default", Data: []byte(`{"id":"dup","code":"print('ran')"}`)}
	if _, err := js.PublishMsg(ctx, msg); err != nil {
		t.Fatal(err)
	}
	// A later job on the same single-slot path shows the duplicate was handled.
	if res := runJob(t, c, &jobs.Job{Code: "pass"}, jobs.Handlers{}); res.Status != jobs.StatusOK {
		t.Fatal(res.Status)
	}
	waitQueueEmpty(t, js)
	if n := countMessages(t, js, "eryx.t.default.job.dup.result"); n != 1 {
		t.Errorf("%d results for job dup, want 1", n)
	}
	if n := countMessages(t, js, "eryx.t.default.job.dup.stdout"); n != 1 {
		t.Errorf("%d stdout events for job dup, want 1 (it ran more than once)", n)
	}

	// Replaying the job's events gives the one result.
	if again := waitResult(t, c, "dup"); again.Stdout != "ran\n" {
		t.Errorf("replayed result %+v", again)
	}
}

func waitQueueEmpty(t *testing.T, js jetstream.JetStream) {
	t.Helper()
	check.For(t, check.Bound, 20*time.Millisecond, func() error {
		s, err := js.Stream(context.Background(), "ERYX_JOBS")
		if err != nil {
			return err
		}
		if n := s.CachedInfo().State.Msgs; n != 0 {
			return fmt.Errorf("jobs stream holds %d messages", n)
		}
		return nil
	})
}

func TestTwoWorkersShareAQueue(t *testing.T) {
	url := startServer(t)
	for _, id := range []string{"w1", "w2"} {
		cfg := testConfig(id)
		cfg.Concurrency = 1
		startWorker(t, connect(t, url), cfg)
	}
	c := newClient(t, connect(t, url))
	ctx := context.Background()

	const n = 8
	ids := make([]string, n)
	for i := range ids {
		sub, err := c.Submit(ctx, "", &jobs.Job{Code: "import time\ntime.sleep(0.15)\nprint('done')"})
		if err != nil {
			t.Fatal(err)
		}
		ids[i] = sub.ID
	}
	byWorker := map[string]int{}
	for _, id := range ids {
		res := waitResult(t, c, id)
		if res.Status != jobs.StatusOK || res.Stdout != "done\n" {
			t.Fatalf("job %s: %s %q", id, res.Status, res.Stdout)
		}
		byWorker[res.Worker]++
	}
	if byWorker["w1"] == 0 || byWorker["w2"] == 0 {
		t.Errorf("jobs per worker %v: both workers should have run some", byWorker)
	}
}

func TestWorkerKilledMidJobIsRedelivered(t *testing.T) {
	url := startServer(t)
	cfg := testConfig("doomed")
	cfg.AckWait = time.Second
	nc1 := connect(t, url)
	doomed := startWorker(t, nc1, cfg)
	c := newClient(t, connect(t, url))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	watch, err := c.Watch(ctx, "survivor")
	if err != nil {
		t.Fatal(err)
	}
	defer watch.Stop()
	if _, err := c.Submit(ctx, "", &jobs.Job{ID: "survivor",
		Code: "import time\nprint('started', flush=True)\ntime.sleep(0.5)\nprint('finished')"}); err != nil {
		t.Fatal(err)
	}
	out := newOutput()
	h := out.handlers()
	var restarted atomic.Int32
	h.Attempt = func(attempt int, worker string) { restarted.Store(int32(attempt)) }
	type outcome struct {
		res *jobs.Result
		err error
	}
	done := make(chan outcome, 1)
	go func() {
		res, err := watch.Wait(ctx, h)
		done <- outcome{res, err}
	}()

	// Kill the first worker as soon as the job runs: its connection goes,
	// so it can neither ack nor report.
	waitFirstOutput(t, out)
	nc1.Close()
	if err := doomed.wait(); err == nil {
		t.Error("worker whose connection was closed stopped without an error")
	}
	killedAt := time.Now()

	cfg2 := testConfig("rescuer")
	cfg2.AckWait = time.Second
	startWorker(t, connect(t, url), cfg2)

	o := <-done
	if o.err != nil {
		t.Fatal(o.err)
	}
	res := o.res
	if res.Status != jobs.StatusOK || res.Worker != "rescuer" || res.Attempt != 2 {
		t.Fatalf("result %s by %s attempt %d, want ok by rescuer attempt 2", res.Status, res.Worker, res.Attempt)
	}
	if res.Stdout != "started\nfinished\n" {
		t.Errorf("stdout %q", res.Stdout)
	}
	if restarted.Load() != 2 {
		t.Errorf("Attempt handler saw %d, want 2", restarted.Load())
	}
	t.Logf("redelivered and finished %v after the kill", time.Since(killedAt).Round(time.Millisecond))
}

func TestPoisonJobGoesToDeadLetterQueue(t *testing.T) {
	nc := connect(t, startServer(t))
	cfg := testConfig("w1")
	cfg.AckWait = 500 * time.Millisecond
	cfg.MaxDeliver = 2
	var crashes atomic.Int32
	cfg.SimulateCrash = func(job *jobs.Job, attempt int) bool {
		if job.ID == "poison" {
			crashes.Add(1)
			return true
		}
		return false
	}
	startWorker(t, nc, cfg)
	c := newClient(t, nc)
	js, _ := jetstream.New(nc)
	ctx := context.Background()

	if _, err := c.Submit(ctx, "", &jobs.Job{ID: "poison", Code: "print('never')"}); err != nil {
		t.Fatal(err)
	}
	res := waitResult(t, c, "poison")
	if res.Status != jobs.StatusRejected || res.Code != jobs.CodeDeadLetter {
		t.Fatalf("result %s/%s, want rejected/dead_letter", res.Status, res.Code)
	}
	if !strings.Contains(res.Reason, "2 times") {
		t.Errorf("reason %q", res.Reason)
	}
	if n := crashes.Load(); n != 2 {
		t.Errorf("%d deliveries, want 2", n)
	}

	dlq, err := js.Stream(ctx, "ERYX_DLQ")
	if err != nil {
		t.Fatal(err)
	}
	dead, err := dlq.GetLastMsgForSubject(ctx, "eryx.dlq.default.default")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(dead.Data), `"poison"`) || dead.Header.Get(jobs.HeaderDLQReason) == "" ||
		dead.Header.Get(jobs.HeaderDLQDeliveries) != "2" || dead.Header.Get(jobs.HeaderDLQSubject) != "eryx.jobs.default.default" {
		t.Errorf("dead letter %s %v", dead.Data, dead.Header)
	}
	waitQueueEmpty(t, js)

	// Other jobs are unaffected.
	if res := runJob(t, c, &jobs.Job{Code: "print(1)"}, jobs.Handlers{}); res.Status != jobs.StatusOK {
		t.Fatal(res.Status)
	}
}

// The server announces an exhausted job once, on core NATS. With no worker
// connected at that moment the advisory waits in a stream, and the next
// worker to start dead-letters the job.
func TestPoisonJobDeadLetteredByALaterWorker(t *testing.T) {
	url := startServer(t)
	cfg := testConfig("crasher")
	cfg.AckWait = 500 * time.Millisecond
	cfg.MaxDeliver = 2
	nc1 := connect(t, url)
	var deliveries atomic.Int32
	stopped := make(chan struct{})
	cfg.SimulateCrash = func(job *jobs.Job, attempt int) bool {
		if deliveries.Add(1) == 2 {
			// The last delivery's worker dies, and no other is running when
			// the server gives up on the job.
			go func() { nc1.Close(); close(stopped) }()
		}
		return true
	}
	crasher := startWorker(t, nc1, cfg)
	c := newClient(t, connect(t, url))
	ctx := context.Background()
	if _, err := c.Submit(ctx, "", &jobs.Job{ID: "orphan-poison", Code: "print('never')"}); err != nil {
		t.Fatal(err)
	}
	<-stopped
	_ = crasher.wait()
	// No sleep for the last delivery's AckWait: the server notices the
	// exhausted job when the next worker pulls, whenever that is, and the
	// advisories stream hands the announcement to that worker.

	cfg2 := testConfig("latecomer")
	cfg2.AckWait = 500 * time.Millisecond
	cfg2.MaxDeliver = 2
	startWorker(t, connect(t, url), cfg2)
	res := waitResult(t, c, "orphan-poison")
	if res.Status != jobs.StatusRejected || res.Code != jobs.CodeDeadLetter {
		t.Fatalf("result %s/%s, want rejected/dead_letter", res.Status, res.Code)
	}
	js, _ := jetstream.New(connect(t, url))
	waitQueueEmpty(t, js)
}

func TestCancelRunningJob(t *testing.T) {
	nc := connect(t, startServer(t))
	startWorker(t, nc, testConfig("w1"))
	c := newClient(t, nc)
	ctx, cancel := context.WithTimeout(context.Background(), 2*check.Bound)
	defer cancel()

	tests := []struct{ name, code string }{
		{"python loop", "print('go', flush=True)\nwhile True: pass"},
		{"sleep", "import time\nprint('go', flush=True)\ntime.sleep(60)"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id := "spin" + itoa(uint64(i))
			watch, err := c.Watch(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			defer watch.Stop()
			if _, err := c.Submit(ctx, "", &jobs.Job{ID: id, Code: tt.code}); err != nil {
				t.Fatal(err)
			}
			out := newOutput()
			resc := make(chan *jobs.Result, 1)
			go func() {
				res, err := watch.Wait(ctx, out.handlers())
				if err != nil {
					t.Error(err)
				}
				resc <- res
			}()
			waitFirstOutput(t, out)
			if err := c.Cancel(ctx, id, "test"); err != nil {
				t.Fatal(err)
			}
			res := <-resc
			if res == nil || res.Status != jobs.StatusCancelled {
				t.Fatalf("result %+v", res)
			}

			// Cancelling again, or after the end, changes nothing.
			if err := c.Cancel(ctx, id, "again"); err != nil {
				t.Fatal(err)
			}
		})
	}
	if res := runJob(t, c, &jobs.Job{Code: "print(1)"}, jobs.Handlers{}); res.Status != jobs.StatusOK {
		t.Fatal(res.Status)
	}
}

func TestCancelQueuedJobNeverRuns(t *testing.T) {
	nc := connect(t, startServer(t))
	cfg := testConfig("w1")
	cfg.Concurrency = 1
	w := newWorker(t, nc, cfg) // streams exist, nothing runs yet
	c := newClient(t, nc)
	ctx := context.Background()

	if _, err := c.Submit(ctx, "", &jobs.Job{ID: "queued", Code: "print('must not run')"}); err != nil {
		t.Fatal(err)
	}
	if err := c.Cancel(ctx, "queued", ""); err != nil {
		t.Fatal(err)
	}
	if err := c.Cancel(ctx, "queued", ""); err != nil { // twice is harmless
		t.Fatal(err)
	}
	run(t, w)
	res := waitResult(t, c, "queued")
	if res.Status != jobs.StatusCancelled || res.Stdout != "" {
		t.Fatalf("result %s stdout %q", res.Status, res.Stdout)
	}

	// A job queued behind a running one, cancelled while it waits.
	if _, err := c.Submit(ctx, "", &jobs.Job{ID: "blocker", Code: "import time\nprint('b', flush=True)\ntime.sleep(30)"}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Submit(ctx, "", &jobs.Job{ID: "behind", Code: "print('must not run')"}); err != nil {
		t.Fatal(err)
	}
	if err := c.Cancel(ctx, "behind", ""); err != nil {
		t.Fatal(err)
	}
	if err := c.Cancel(ctx, "blocker", ""); err != nil {
		t.Fatal(err)
	}
	if res := waitResult(t, c, "blocker"); res.Status != jobs.StatusCancelled {
		t.Fatalf("blocker: %s", res.Status)
	}
	if res := waitResult(t, c, "behind"); res.Status != jobs.StatusCancelled || res.Stdout != "" {
		t.Fatalf("behind: %s %q", res.Status, res.Stdout)
	}

	// Cancelling a finished job leaves its result alone.
	done := runJob(t, c, &jobs.Job{ID: "finished", Code: "print('ok')"}, jobs.Handlers{})
	if err := c.Cancel(ctx, "finished", ""); err != nil {
		t.Fatal(err)
	}
	js, _ := jetstream.New(nc)
	if n := countMessages(t, js, "eryx.t.default.job.finished.result"); n != 1 || done.Status != jobs.StatusOK {
		t.Fatalf("%d results, status %s", n, done.Status)
	}
}

func TestDrain(t *testing.T) {
	url := startServer(t)
	c := newClient(t, connect(t, url))
	ctx := context.Background()

	t.Run("in-flight job finishes", func(t *testing.T) {
		w := startWorker(t, connect(t, url), testConfig("w1"))
		watch, err := c.Watch(ctx, "finishing")
		if err != nil {
			t.Fatal(err)
		}
		defer watch.Stop()
		if _, err := c.Submit(ctx, "", &jobs.Job{ID: "finishing", Code: "import time\nprint('a', flush=True)\ntime.sleep(0.5)\nprint('b')"}); err != nil {
			t.Fatal(err)
		}
		out := newOutput()
		resc := make(chan *jobs.Result, 1)
		go func() { res, _ := watch.Wait(ctx, out.handlers()); resc <- res }()
		waitFirstOutput(t, out)
		if err := w.stop(); err != nil {
			t.Fatal(err)
		}
		select {
		case res := <-resc:
			if res.Status != jobs.StatusOK || res.Stdout != "a\nb\n" {
				t.Fatalf("%+v", res)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("no result after the drain")
		}
	})

	t.Run("job past the drain timeout goes back to the queue", func(t *testing.T) {
		cfg := testConfig("impatient")
		cfg.DrainTimeout = 200 * time.Millisecond
		w := startWorker(t, connect(t, url), cfg)
		watch, err := c.Watch(ctx, "requeued")
		if err != nil {
			t.Fatal(err)
		}
		defer watch.Stop()
		if _, err := c.Submit(ctx, "", &jobs.Job{ID: "requeued", Code: "import time\nprint('a', flush=True)\ntime.sleep(1)\nprint('b')"}); err != nil {
			t.Fatal(err)
		}
		out := newOutput()
		resc := make(chan *jobs.Result, 1)
		go func() { res, _ := watch.Wait(ctx, out.handlers()); resc <- res }()
		waitFirstOutput(t, out)
		if err := w.stop(); err != nil {
			t.Fatal(err)
		}
		startWorker(t, connect(t, url), testConfig("next"))
		select {
		case res := <-resc:
			if res.Status != jobs.StatusOK || res.Worker != "next" || res.Attempt != 2 {
				t.Fatalf("%s by %s attempt %d", res.Status, res.Worker, res.Attempt)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("requeued job did not finish")
		}
	})
}

// TestRacingDuplicatesPublishOneResult delivers the same job to two
// workers at once (as a republication past the dedup window would): both
// run it, but the result subject's compare-and-set keeps one result.
func TestRacingDuplicatesPublishOneResult(t *testing.T) {
	url := startServer(t)
	for _, id := range []string{"w1", "w2"} {
		cfg := testConfig(id)
		cfg.Concurrency = 1
		startWorker(t, connect(t, url), cfg)
	}
	nc := connect(t, url)
	c := newClient(t, nc)
	js, _ := jetstream.New(nc)
	ctx := context.Background()
	// Without Nats-Msg-Id the stream keeps both copies.
	for i := range 2 {
		msg := &nats.Msg{Subject: "eryx.jobs.default.default",
			Data: []byte(`{"id":"twice","code":"import time\ntime.sleep(0.3)\nprint('ran')"}`)}
		if _, err := js.PublishMsg(ctx, msg); err != nil {
			t.Fatal(i, err)
		}
	}
	res := waitResult(t, c, "twice")
	if res.Status != jobs.StatusOK {
		t.Fatal(res.Status)
	}
	waitQueueEmpty(t, js)
	if n := countMessages(t, js, "eryx.t.default.job.twice.result"); n != 1 {
		t.Errorf("%d results, want 1", n)
	}
}
