package worker_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/eryx-dev/eryx/internal/testenv"
	"github.com/eryx-dev/eryx/jobs"
)

// startLog records the order in which a worker starts jobs.
type startLog struct {
	mu  sync.Mutex
	ids []string
}

func (l *startLog) hook(ctx context.Context, _ jetstream.Msg, id string) (context.Context, func(jobs.Status)) {
	l.mu.Lock()
	l.ids = append(l.ids, id)
	l.mu.Unlock()
	return ctx, func(jobs.Status) {}
}

func (l *startLog) snapshot() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.ids)
}

// queueJobs publishes n trivial jobs of tenant straight onto the jobs
// stream, asynchronously: the cheap way to fill a queue.
func queueJobs(t *testing.T, js jetstream.JetStream, tenant, prefix string, n int) {
	t.Helper()
	s := jobs.Subjects{}
	for i := range n {
		id := fmt.Sprintf("%s-%d", prefix, i)
		data, _ := json.Marshal(jobs.Job{V: jobs.Version, ID: id, Code: "pass"})
		msg := &nats.Msg{Subject: s.Jobs("", tenant), Data: data, Header: nats.Header{}}
		msg.Header.Set(jobs.HeaderMsgID, jobs.MsgID(tenant, id))
		if _, err := js.PublishMsgAsync(msg); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(60 * time.Second):
		t.Fatal("queueing jobs: no acks within 60s")
	}
}

// TestFairShareAcrossTenants: while tenant A has 2,000 jobs queued, tenant
// B's one job starts before more than a few rounds of the pool of A's jobs
// start after it was submitted. Without fair share (one FIFO consumer) it
// would wait for all 2,000.
func TestFairShareAcrossTenants(t *testing.T) {
	url := startServer(t)
	nc := connect(t, url)
	js := mustJS(t, nc)
	cfg := testConfig("fair")
	var log startLog
	cfg.StartJob = log.hook
	w := newWorker(t, nc, cfg)
	queueJobs(t, js, "a", "a", 2000)
	run(t, w)

	testenv.PollUntil(t, 60*time.Second, "the worker to start A's jobs", func() bool { return len(log.snapshot()) >= 5 })
	b := tenantClient(t, nc, "b")
	if _, err := b.Submit(context.Background(), "", &jobs.Job{ID: "b-1", Code: "pass"}); err != nil {
		t.Fatal(err)
	}
	before := len(log.snapshot())
	testenv.PollUntil(t, 60*time.Second, "B's job to start", func() bool { return slices.Contains(log.snapshot(), "b-1") })
	after := slices.Index(log.snapshot(), "b-1")
	// A's jobs take microseconds, so the slots that free up while B's
	// doorbell is on its way (asynchronous, and slow under -race) pull
	// A's next; a few rounds of the pool are slack, 2,000 would be FIFO.
	if n, limit := after-before, 4*cfg.Concurrency+2; n > limit {
		t.Fatalf("%d of A's jobs started after B's was submitted and before it (limit %d)", n, limit)
	} else {
		t.Logf("A's jobs started between B's submission and its start: %d (pool %d)", n, cfg.Concurrency)
	}
	if res := waitResult(t, b, "b-1"); res.Status != jobs.StatusOK {
		t.Fatalf("B's job: %s %s", res.Status, res.Reason)
	}
}
