package worker_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/eryx-dev/eryx/internal/check"
	"github.com/eryx-dev/eryx/jobs"
	"github.com/eryx-dev/eryx/jobs/worker"
	"github.com/eryx-dev/eryx/kvstate"
)

// testSnapshotKey is the workers' shared snapshot key in tests.
var testSnapshotKey = []byte("test-snapshot-key-0123456789abcdef")

// sessionConfig is a worker configuration with sessions in KV.
func sessionConfig(t *testing.T, nc *nats.Conn, id string) worker.Config {
	t.Helper()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	store, err := kvstate.Open(context.Background(), js, kvstate.Config{MACKey: testSnapshotKey})
	if err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(id)
	cfg.Concurrency = 1
	cfg.Sessions = worker.KVSessions(store)
	return cfg
}

func TestSessionMigratesBetweenWorkers(t *testing.T) {
	url := startServer(t)
	c := newClient(t, connect(t, url))

	ncA := connect(t, url)
	a := startWorker(t, ncA, sessionConfig(t, ncA, "A"))
	res := runJob(t, c, &jobs.Job{Session: "s1", Code: "x = 42"}, jobs.Handlers{})
	if res.Status != jobs.StatusOK || res.Worker != "A" || res.SessionRevision == 0 {
		t.Fatalf("first job: %s by %s, revision %d (%s)", res.Status, res.Worker, res.SessionRevision, res.SessionError)
	}
	// Warm on A: the next job finds the state in memory.
	res = runJob(t, c, &jobs.Job{Session: "s1", Code: "x += 1\nprint(x)"}, jobs.Handlers{})
	if res.Status != jobs.StatusOK || res.Stdout != "43\n" {
		t.Fatalf("warm job: %s %q %+v", res.Status, res.Stdout, res.Error)
	}
	if err := a.stop(); err != nil {
		t.Fatal(err)
	}

	ncB := connect(t, url)
	startWorker(t, ncB, sessionConfig(t, ncB, "B"))
	res = runJob(t, c, &jobs.Job{Session: "s1", Code: "print(x * 2)"}, jobs.Handlers{})
	if res.Status != jobs.StatusOK || res.Worker != "B" || res.Stdout != "86\n" {
		t.Fatalf("on B: %s by %s, stdout %q, error %+v", res.Status, res.Worker, res.Stdout, res.Error)
	}

	// A session is its own namespace.
	res = runJob(t, c, &jobs.Job{Session: "s2", Code: "print('x' in globals())"}, jobs.Handlers{})
	if res.Stdout != "False\n" {
		t.Fatalf("s2 sees s1's state: %q", res.Stdout)
	}
}

func TestWarmSessionIsNotUsedWhenStale(t *testing.T) {
	url := startServer(t)
	c := newClient(t, connect(t, url))
	// Two workers on queues of their own, so each job goes where the test
	// says; the session store is shared.
	ncA, ncB := connect(t, url), connect(t, url)
	cfgA, cfgB := sessionConfig(t, ncA, "A"), sessionConfig(t, ncB, "B")
	cfgA.Queue, cfgB.Queue = "qa", "qb"
	startWorker(t, ncA, cfgA)
	startWorker(t, ncB, cfgB)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	on := func(queue, code string) *jobs.Result {
		t.Helper()
		res, err := c.Run(ctx, queue, &jobs.Job{Session: "s", Code: code}, jobs.Handlers{})
		if err != nil {
			t.Fatal(err)
		}
		return res
	}

	on("qa", "n = 1")           // A holds the session warm at its first revision
	on("qb", "n = n + 10")      // B restores it from KV and moves it on
	res := on("qa", "print(n)") // A's warm copy is stale: it must restore
	if res.Stdout != "11\n" || res.Worker != "A" {
		t.Fatalf("stdout %q by %s (%s %+v)", res.Stdout, res.Worker, res.Status, res.Error)
	}
}

func TestConcurrentSessionJobsCannotBothCommit(t *testing.T) {
	url := startServer(t)
	c := newClient(t, connect(t, url))
	ncA, ncB := connect(t, url), connect(t, url)
	startWorker(t, ncA, sessionConfig(t, ncA, "A"))
	startWorker(t, ncB, sessionConfig(t, ncB, "B"))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	if res := runJob(t, c, &jobs.Job{Session: "race", Code: "v = 0"}, jobs.Handlers{}); res.Status != jobs.StatusOK {
		t.Fatal(res.Status)
	}
	slow, err := c.Watch(ctx, "slow")
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Stop()
	if _, err := c.Submit(ctx, "", &jobs.Job{ID: "slow", Session: "race",
		Code: "import time\nprint('in', flush=True)\ntime.sleep(0.5)\nv = 'slow'"}); err != nil {
		t.Fatal(err)
	}
	out := newOutput()
	resc := make(chan *jobs.Result, 1)
	go func() { res, _ := slow.Wait(ctx, out.handlers()); resc <- res }()
	waitFirstOutput(t, out)

	// The other worker runs a quick job of the same session meanwhile.
	fast := runJob(t, c, &jobs.Job{Session: "race", Code: "v = 'fast'"}, jobs.Handlers{})
	if fast.Status != jobs.StatusOK {
		t.Fatalf("fast job: %s %s", fast.Status, fast.SessionError)
	}
	res := <-resc
	if res == nil || res.Status != jobs.StatusError || res.Error == nil || res.Error.Type != "eryx.SessionError" ||
		!strings.Contains(res.SessionError, "not saved") {
		t.Fatalf("slow job: %+v", res)
	}
	if got := runJob(t, c, &jobs.Job{Session: "race", Code: "print(v)"}, jobs.Handlers{}); got.Stdout != "fast\n" {
		t.Fatalf("state after the race: %q", got.Stdout)
	}
}

func TestSessionSnapshotLimit(t *testing.T) {
	nc := connect(t, startServer(t))
	cfg := sessionConfig(t, nc, "w1")
	cfg.SnapshotBytes = 64 << 10
	startWorker(t, nc, cfg)
	c := newClient(t, nc)

	runJob(t, c, &jobs.Job{Session: "big", Code: "small = 1"}, jobs.Handlers{})
	res := runJob(t, c, &jobs.Job{Session: "big", Code: "blob = 'x' * 200_000"}, jobs.Handlers{})
	if res.Status != jobs.StatusError || res.Error == nil || res.Error.Type != "eryx.SessionError" ||
		!strings.Contains(res.SessionError, "too large") {
		t.Fatalf("%s %+v session_error %q", res.Status, res.Error, res.SessionError)
	}
	// The session kept its last good state.
	res = runJob(t, c, &jobs.Job{Session: "big", Code: "print(small, 'blob' in globals())"}, jobs.Handlers{})
	if res.Stdout != "1 False\n" {
		t.Fatalf("after the failed save: %q %+v", res.Stdout, res.Error)
	}
}

// The worker sweeps orphaned snapshot blobs itself (kvstate.Store.Sweep is
// no longer something an operator must remember to run), and never a blob
// a live session references.
func TestWorkerSweepsOrphanedBlobs(t *testing.T) {
	url := startServer(t)
	nc := connect(t, url)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	store, err := kvstate.Open(t.Context(), js, kvstate.Config{MACKey: testSnapshotKey, MaxValueSize: 1 << 10, SweepGrace: time.Nanosecond})
	if err != nil {
		t.Fatal(err)
	}
	// A live session whose snapshot, above MaxValueSize, lives in a blob.
	// Committed before the worker starts: with a grace period of 1 ns a
	// sweep could otherwise fall between a commit's upload and its entry,
	// which is what the grace period is for.
	live := jobs.SessionKey(jobs.DefaultTenant, "big")
	if _, err := store.Commit(t.Context(), live, make([]byte, 100<<10), 0, kvstate.CommitOptions{}); err != nil {
		t.Fatal(err)
	}
	cfg := testConfig("sweeper")
	cfg.Concurrency = 1
	cfg.Sessions = worker.KVSessions(store)
	cfg.SessionSweep = 20 * time.Millisecond
	startWorker(t, nc, cfg)
	obs, err := js.ObjectStore(t.Context(), kvstate.DefaultBlobBucket)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := obs.PutBytes(t.Context(), "default/gone/orphan", []byte("x")); err != nil {
		t.Fatal(err)
	}
	check.For(t, check.Bound, 20*time.Millisecond, func() error {
		if _, err := obs.GetInfo(t.Context(), "default/gone/orphan"); !errors.Is(err, jetstream.ErrObjectNotFound) {
			return fmt.Errorf("orphan still there: %w", err)
		}
		return nil
	})
	if _, err := store.Load(t.Context(), live); err != nil {
		t.Fatalf("the live session's blob was swept: %v", err)
	}
}
