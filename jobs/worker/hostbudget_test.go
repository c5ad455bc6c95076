package worker_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/eryx-dev/eryx/jobs"
	"github.com/eryx-dev/eryx/runtime/sandbox"
	"github.com/eryx-dev/eryx/telemetry"
)

// TestHostFloodsEndOnlyTheFloodingJob runs issue 10's rows 1-3, scaled
// down, through a real worker and NATS, next to ordinary jobs: each flood
// ends its own job with the limit it hit (or, for the trace, truncates it
// within its bounds), the worker's Go heap grows by no more than the
// budgets allow, every ordinary job succeeds, and the worker counts the
// limits in its metrics.
func TestHostFloodsEndOnlyTheFloodingJob(t *testing.T) {
	const (
		hostCallBytes = 4 << 20
		traceBytes    = 256 << 10
		traceEvents   = 2000
	)
	nc := connect(t, startServer(t))
	metrics := telemetry.NewMetrics()
	cfg := testConfig("w1")
	cfg.HostCalls, cfg.HostCallBytes = 64, hostCallBytes
	cfg.TraceBytes, cfg.TraceEvents = traceBytes, traceEvents
	cfg.Observer = metrics
	cfg.Callbacks = sandbox.NewCallbacks(sandbox.Callback{
		CallbackSpec: sandbox.CallbackSpec{Name: "slow"},
		Func: func(ctx context.Context, _ json.RawMessage) (json.RawMessage, error) {
			<-ctx.Done()
			return nil, ctx.Err()
		},
	})
	startWorker(t, nc, cfg)
	c := newClient(t, nc)

	ordinary := func(id string) *jobs.Job {
		return &jobs.Job{ID: id, Code: "result = sum(range(1000))", Callbacks: []string{}}
	}
	runAll := func(js []*jobs.Job) map[string]*jobs.Result {
		var mu sync.Mutex
		out := make(map[string]*jobs.Result)
		var wg sync.WaitGroup
		for _, j := range js {
			wg.Go(func() {
				res := runJob(t, c, j, jobs.Handlers{})
				mu.Lock()
				out[j.ID] = res
				mu.Unlock()
			})
		}
		wg.Wait()
		return out
	}
	heap := func(fn func()) uint64 {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		fn()
		runtime.ReadMemStats(&after)
		return after.TotalAlloc - before.TotalAlloc
	}

	// What three ordinary jobs cost, to compare with.
	base := heap(func() { runAll([]*jobs.Job{ordinary("base-1"), ordinary("base-2"), ordinary("base-3")}) })

	attacks := []*jobs.Job{
		// Row 1: large payloads to a host operation nobody serves.
		{ID: "flood-calls", Code: "import _eryxhost\nb = b'A' * (1 << 20)\nfor i in range(300):\n    _eryxhost.call('net.nope', b)\n"},
		// Row 2: concurrent callbacks with large arguments.
		{ID: "flood-callbacks", Code: "import asyncio\npad = 'A' * 900_000\nawait asyncio.gather(*[invoke('slow', pad=pad) for _ in range(300)])\n"},
		// Row 3: large trace events in a loop.
		{ID: "flood-trace", Trace: true, Code: "import _eryxhost, json\nev = json.dumps({'kind': 'line', 'function': 'x' * 60_000}).encode()\n" +
			"for i in range(300):\n    _eryxhost.emit('trace', ev)\nbig = json.dumps({'kind': 'line', 'function': 'x' * 900_000}).encode()\n" +
			"for i in range(100):\n    _eryxhost.emit('trace', big)\n"},
		// Row 3 by plain tracing: a long traced loop.
		{ID: "flood-lines", Trace: true, Code: "n = 0\nfor i in range(20_000):\n    n += i\n"},
	}
	var results map[string]*jobs.Result
	grew := heap(func() {
		all := append([]*jobs.Job{ordinary("side-1"), ordinary("side-2")}, attacks...)
		results = runAll(all)
	})

	for _, id := range []string{"side-1", "side-2"} {
		if r := results[id]; r.Status != jobs.StatusOK || string(r.Result) != "499500" {
			t.Errorf("ordinary job %s next to the floods: %s %s %+v", id, r.Status, r.Result, r.Error)
		}
	}
	for id, limit := range map[string]string{"flood-calls": sandbox.LimitHostCalls, "flood-callbacks": sandbox.LimitHostCallBytes} {
		r := results[id]
		if r.Status != jobs.StatusError || r.Error == nil || r.Error.Type != "eryx.LimitExceeded" || r.Limit != limit ||
			!strings.Contains(r.Error.Message, limit) {
			t.Errorf("%s: status %s limit %q error %+v, want error eryx.LimitExceeded naming %s", id, r.Status, r.Limit, r.Error, limit)
		}
	}
	for _, id := range []string{"flood-trace", "flood-lines"} {
		r := results[id]
		if r.Status != jobs.StatusOK || !r.TraceTruncated {
			t.Errorf("%s: status %s trace_truncated %v %+v", id, r.Status, r.TraceTruncated, r.Error)
		}
		n, size := storedEvents(t, nc, jobs.Subjects{}.Event(jobs.DefaultTenant, id, jobs.EventTrace))
		// Each event is counted by its size; its envelope and headers add
		// a bounded amount per event, plus the final truncation marker.
		if n > traceEvents+1 || size > traceBytes+(n*512) {
			t.Errorf("%s stored %d trace events, %d bytes: above %d events, %d bytes", id, n, size, traceEvents, traceBytes)
		}
		t.Logf("%s: %d trace events, %d bytes stored", id, n, size)
	}

	// The two host-call floods hold at most hostCallBytes each, the traces
	// a few copies of traceBytes each (parsed, published, stored by the
	// in-process server); unbounded, the first two alone copy 570 MB.
	bound := 2*base + 2*hostCallBytes + 2*8*traceBytes + 32<<20
	t.Logf("allocated %d KiB during the floods (3 ordinary jobs: %d KiB, bound %d KiB)", grew>>10, base>>10, bound>>10)
	if grew > bound {
		t.Errorf("the worker allocated %d bytes during the floods, above the %d the budgets allow", grew, bound)
	}

	if r := runJob(t, c, ordinary("after"), jobs.Handlers{}); r.Status != jobs.StatusOK {
		t.Errorf("a job after the floods: %s %+v", r.Status, r.Error)
	}
	rec := httptest.NewRecorder()
	metrics.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	for _, limit := range []string{sandbox.LimitHostCalls, sandbox.LimitHostCallBytes} {
		if want := fmt.Sprintf(`%s{limit=%q} 1`, telemetry.MetricLimitExceeded, limit); !strings.Contains(rec.Body.String(), want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}

// storedEvents counts the messages the events stream holds on subject and
// their size (payload and headers).
func storedEvents(t *testing.T, nc *nats.Conn, subject string) (n, size int) {
	t.Helper()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cons, err := js.OrderedConsumer(ctx, jobs.Subjects{}.EventsStream(), jetstream.OrderedConsumerConfig{FilterSubjects: []string{subject}})
	if err != nil {
		t.Fatal(err)
	}
	info, err := cons.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for pending := int(info.NumPending); n < pending; {
		msg, err := cons.Next(jetstream.FetchMaxWait(10 * time.Second))
		if err != nil {
			t.Fatal(err)
		}
		n++
		size += len(msg.Data())
		for k, vs := range msg.Headers() {
			for _, v := range vs {
				size += len(k) + len(v) + 4
			}
		}
	}
	return n, size
}
