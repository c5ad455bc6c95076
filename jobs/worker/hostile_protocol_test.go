package worker_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/eryx-dev/eryx/internal/check"
	"github.com/eryx-dev/eryx/jobs"
)

// Regression tests for issue #10, rows 3, 9 and 10: what a job or a
// client publishing on the platform's subjects can do to other jobs.

// waitFor polls cond until it holds, failing the test after a generous
// bound (machines differ several-fold in speed).
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	check.Until(t, 60*time.Second, what, cond)
}

func streamInfo(t *testing.T, js jetstream.JetStream, name string) *jetstream.StreamInfo {
	t.Helper()
	s, err := js.Stream(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return info
}

// collector gathers a watch's output, starting over when the watch says
// a new attempt began (as jobs.Handlers.Attempt asks).
type collector struct {
	mu       sync.Mutex
	out      strings.Builder
	restarts int
}

func (c *collector) handlers() jobs.Handlers {
	return jobs.Handlers{
		Output: func(_ jobs.EventKind, data []byte) {
			c.mu.Lock()
			c.out.Write(data)
			c.mu.Unlock()
		},
		Attempt: func(int, string) {
			c.mu.Lock()
			c.out.Reset()
			c.restarts++
			c.mu.Unlock()
		},
	}
}

func (c *collector) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.out.String()
}

// TestOutputFloodCannotEvictResults: jobs that flood their output fill
// the events stream; another job's result and events stay, attach still
// works, and a job run once the stream is full still gets its result.
func TestOutputFloodCannotEvictResults(t *testing.T) {
	nc := connect(t, startServer(t))
	cfg := testConfig("w1")
	const perSubject, maxBytes = 4, 512 << 10
	cfg.Topology = jobs.Topology{EventsMaxPerSubject: perSubject, EventsMaxBytes: maxBytes}
	startWorker(t, nc, cfg)
	c := newClient(t, nc)
	js, _ := jetstream.New(nc)
	ctx := context.Background()

	if res := runJob(t, c, &jobs.Job{ID: "early", Code: "print('early output')"}, jobs.Handlers{}); res.Status != jobs.StatusOK {
		t.Fatal(res.Status)
	}
	// Each flood writes 400 KB to each of stdout and stderr, in 40 KB
	// events: more than the per-job cap, and with the cap, 320 KB stored.
	flood := "import sys\nfor i in range(10):\n    sys.stdout.write('o' * 40000)\nfor i in range(10):\n    sys.stderr.write('e' * 40000)\n"
	for i := range 3 {
		id := fmt.Sprintf("flood-%d", i)
		res := runJob(t, c, &jobs.Job{ID: id, Code: flood}, jobs.Handlers{})
		if res.Status != jobs.StatusOK {
			t.Fatalf("%s: %s", id, res.Status)
		}
		if n := countMessages(t, js, "eryx.t.default.job."+id+".stdout"); n > perSubject {
			t.Errorf("%s: %d stdout events stored, the per-job cap is %d", id, n, perSubject)
		}
	}
	if n := countMessages(t, js, "eryx.t.default.job.flood-0.stdout"); n != perSubject {
		t.Errorf("the first flood stored %d stdout events, want the cap %d", n, perSubject)
	}
	info := streamInfo(t, js, "ERYX_EVENTS")
	if info.State.Bytes+64<<10 < maxBytes {
		t.Fatalf("events stream holds %d bytes: the floods did not fill it (%d)", info.State.Bytes, maxBytes)
	}

	// The earlier job's result and events are all still there.
	res, err := c.Lookup(ctx, "early")
	if err != nil || res.Status != jobs.StatusOK || res.Stdout != "early output\n" {
		t.Fatalf("early after the flood: %+v, %v", res, err)
	}
	if n := countMessages(t, js, "eryx.t.default.job.early.stdout"); n != 1 {
		t.Errorf("early: %d stdout events, want 1", n)
	}
	var attached collector
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	watch, err := c.Watch(wctx, "early")
	if err != nil {
		t.Fatal(err)
	}
	if res, err := watch.Wait(wctx, attached.handlers()); err != nil || res.ID != "early" {
		t.Fatalf("attach: %v", err)
	}
	if got := attached.String(); got != "early output\n" {
		t.Errorf("attach replayed %q", got)
	}

	// With the events stream full, a job still gets its result (with
	// its output in it), and a duplicate of the early job still does not
	// run: its result is where duplicates are looked for.
	late := runJob(t, c, &jobs.Job{ID: "late", Code: "print('late')"}, jobs.Handlers{})
	if late.Status != jobs.StatusOK || late.Stdout != "late\n" {
		t.Fatalf("late: %s %q", late.Status, late.Stdout)
	}
	if _, err := js.PublishMsg(ctx, &nats.Msg{Subject: "eryx.jobs.default.default", Data: []byte(`{"id":"early","code":"print('again')"}`)}); err != nil {
		t.Fatal(err)
	}
	waitQueueEmpty(t, js)
	if n := countMessages(t, js, "eryx.t.default.job.early.result"); n != 1 {
		t.Errorf("early: %d results, want 1", n)
	}
}

// TestStreamsMigrateFromV1: the streams of a protocol v1 deployment are
// updated in place to the v2 subjects, and a job queued under v1 runs as
// the default tenant's.
func TestStreamsMigrateFromV1(t *testing.T) {
	nc := connect(t, startServer(t))
	js, _ := jetstream.New(nc)
	ctx := context.Background()
	v1 := []jetstream.StreamConfig{
		{Name: "ERYX_JOBS", Subjects: []string{"eryx.jobs.*"}, Retention: jetstream.WorkQueuePolicy},
		{Name: "ERYX_EVENTS", Subjects: []string{"eryx.job.*.stdout", "eryx.job.*.stderr", "eryx.job.*.trace", "eryx.events.barrier"}},
		{Name: "ERYX_RESULTS", Subjects: []string{"eryx.job.*.result"}, AllowDirect: true},
		{Name: "ERYX_CONTROL", Subjects: []string{"eryx.control.cancel.*"}, MaxMsgsPerSubject: 1},
		{Name: "ERYX_DLQ", Subjects: []string{"eryx.dlq.*"}},
	}
	for _, cfg := range v1 {
		if _, err := js.CreateStream(ctx, cfg); err != nil {
			t.Fatal(err)
		}
	}
	queued := &nats.Msg{Subject: "eryx.jobs.default", Data: []byte(`{"v":1,"id":"v1-queued","code":"print('from v1')"}`), Header: nats.Header{}}
	queued.Header.Set(jobs.HeaderMsgID, "v1-queued")
	if _, err := js.PublishMsg(ctx, queued); err != nil {
		t.Fatal(err)
	}

	startWorker(t, nc, testConfig("w1"))
	c := newClient(t, nc)
	want := map[string][]string{}
	for _, cfg := range (jobs.Topology{}).StreamConfigs() {
		want[cfg.Name] = cfg.Subjects
	}
	for _, cfg := range v1 {
		if got := streamInfo(t, js, cfg.Name).Config.Subjects; !slices.Equal(got, want[cfg.Name]) {
			t.Errorf("%s: subjects %v, want %v", cfg.Name, got, want[cfg.Name])
		}
	}
	res := waitResult(t, c, "v1-queued")
	if res.Status != jobs.StatusOK || res.Stdout != "from v1\n" || res.Tenant != jobs.DefaultTenant {
		t.Fatalf("the v1 job: %+v", res)
	}
	if res := runJob(t, c, &jobs.Job{ID: "new-job", Code: "print('new')"}, jobs.Handlers{}); res.Status != jobs.StatusOK {
		t.Fatal(res.Status)
	}
	if n := countMessages(t, js, "eryx.t.default.job.new-job.result"); n != 1 {
		t.Errorf("new job: %d results in ERYX_RESULTS", n)
	}
}

// TestDecoyCannotHoldAVictimsID: a message with Nats-Msg-Id of somebody
// else's job is rejected under its own sequence, and the victim's
// submission, dropped by the stream as a duplicate, fails with ErrIDTaken
// instead of waiting forever.
func TestDecoyCannotHoldAVictimsID(t *testing.T) {
	nc := connect(t, startServer(t))
	c := newClient(t, nc)
	js, _ := jetstream.New(nc)
	ctx := context.Background()
	w := newWorker(t, nc, testConfig("w1")) // streams exist, nothing runs yet

	decoy := func(victim, body string) uint64 {
		msg := &nats.Msg{Subject: "eryx.jobs.default.default", Data: []byte(body), Header: nats.Header{}}
		msg.Header.Set(jobs.HeaderMsgID, jobs.MsgID(jobs.DefaultTenant, victim))
		ack, err := js.PublishMsg(ctx, msg)
		if err != nil {
			t.Fatal(err)
		}
		return ack.Sequence
	}
	// While the decoys are queued: the stored claim is not the victim's job.
	seqA := decoy("victim-a", `{"id":"someone-else","code":"print('decoy')"}`)
	decoy("victim-b", `{"id":"victim-b","code":"print('decoy')"}`)
	for _, id := range []string{"victim-a", "victim-b"} {
		_, err := c.Submit(ctx, "", &jobs.Job{ID: id, Code: "print('mine')"})
		if !errors.Is(err, jobs.ErrIDTaken) {
			t.Fatalf("%s: submit gave %v, want ErrIDTaken", id, err)
		}
	}

	run(t, w)
	res := waitResult(t, c, "invalid-"+strconv.FormatUint(seqA, 10))
	if res.Status != jobs.StatusRejected || res.Code != jobs.CodeInvalidID {
		t.Fatalf("decoy: %s %s", res.Status, res.Code)
	}
	waitQueueEmpty(t, js)
	for _, id := range []string{"victim-a", "someone-else"} {
		if _, err := c.Lookup(ctx, id); !errors.Is(err, jobs.ErrNoResult) {
			t.Errorf("%s has a result: %v", id, err)
		}
	}
	// Once the decoy is answered (and gone), the victim still hears why.
	seqC := decoy("victim-c", `{"id":"other-c","code":"1"}`)
	waitResult(t, c, "invalid-"+strconv.FormatUint(seqC, 10))
	waitQueueEmpty(t, js)
	if _, err := c.Submit(ctx, "", &jobs.Job{ID: "victim-c", Code: "print('mine')"}); !errors.Is(err, jobs.ErrIDTaken) {
		t.Fatalf("victim-c after the decoy ran: %v, want ErrIDTaken", err)
	}

	// An honest retry of the same job is a plain duplicate.
	job := &jobs.Job{ID: "honest", Code: "print('once')"}
	if res := runJob(t, c, job, jobs.Handlers{}); res.Status != jobs.StatusOK {
		t.Fatal(res.Status)
	}
	sub, err := c.Submit(ctx, "", job)
	if err != nil || !sub.Duplicate {
		t.Fatalf("honest retry: %+v %v", sub, err)
	}
}

// TestWatchIgnoresForgedAttempts: events claiming to be another attempt
// or from another worker do not make the watch drop the real output.
func TestWatchIgnoresForgedAttempts(t *testing.T) {
	nc := connect(t, startServer(t))
	startWorker(t, nc, testConfig("w1"))
	c := newClient(t, nc)

	forge := func(id, attempt, seq, worker, text string) {
		msg := &nats.Msg{Subject: "eryx.t.default.job." + id + ".stdout", Data: []byte(text), Header: nats.Header{}}
		msg.Header.Set(jobs.HeaderVersion, "1")
		msg.Header.Set(jobs.HeaderAttempt, attempt)
		msg.Header.Set(jobs.HeaderSeq, seq)
		msg.Header.Set(jobs.HeaderWorker, worker)
		if err := nc.PublishMsg(msg); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name  string
		forge func(id string)
	}{
		{"attempt 999", func(id string) { forge(id, "999", "1", "evil", "FORGED\n") }},
		{"not a number", func(id string) { forge(id, "x", "1", "evil", "FORGED\n") }},
		{"attempt 1 of another worker", func(id string) { forge(id, "1", "1", "evil", "FORGED\n") }},
		{"attempt 2 of another worker", func(id string) { forge(id, "2", "1", "evil", "FORGED\n") }},
		{"attempt 2 mid-sequence", func(id string) { forge(id, "2", "7", "evil", "FORGED\n") }},
		{"all of them", func(id string) {
			forge(id, "1", "1", "evil", "FORGED\n")
			forge(id, "999", "1", "evil", "FORGED\n")
			forge(id, "3", "1", "evil", "FORGED\n")
		}},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id := fmt.Sprintf("forged-%d", i)
			// Forged before the job runs: the watch replays them first, as
			// it would see them if they raced the real output.
			tt.forge(id)
			if err := nc.Flush(); err != nil {
				t.Fatal(err)
			}
			var got collector
			res := runJob(t, c, &jobs.Job{ID: id, Code: "print('real one')\nprint('real two')"}, got.handlers())
			if res.Status != jobs.StatusOK || res.Attempt != 1 || res.Worker != "w1" {
				t.Fatalf("%s attempt %d by %s", res.Status, res.Attempt, res.Worker)
			}
			if out := got.String(); out != "real one\nreal two\n" {
				t.Errorf("output %q", out)
			}
		})
	}
}
