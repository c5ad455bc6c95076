package worker_test

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"

	"github.com/eryx-dev/eryx/callbacks"
	"github.com/eryx-dev/eryx/callbacks/catalogue"
	"github.com/eryx-dev/eryx/internal/check"
	"github.com/eryx-dev/eryx/internal/testenv"
	"github.com/eryx-dev/eryx/jobs"
	"github.com/eryx-dev/eryx/jobs/worker"
	"github.com/eryx-dev/eryx/kvstate"
)

// Regression tests for rows 4-7 of issue #10: what a job or a client
// can make the worker hold on the host side is bounded.

// floodInfo answers $SRV.INFO as a service announcing n callbacks it
// does not serve.
func floodInfo(t *testing.T, nc *nats.Conn, name string, n int) {
	t.Helper()
	info := micro.Info{ServiceIdentity: micro.ServiceIdentity{Name: name, ID: name, Version: "1.0.0"}, Type: micro.InfoResponseType}
	for i := range n {
		cb := fmt.Sprintf("%s.f%04d", name, i)
		info.Endpoints = append(info.Endpoints, micro.EndpointInfo{Name: cb, Subject: "eryx.cb." + cb,
			Metadata: map[string]string{callbacks.MetaCallback: cb}})
	}
	data, err := json.Marshal(info)
	if err != nil {
		t.Fatal(err)
	}
	sub, err := nc.Subscribe("$SRV.INFO", func(m *nats.Msg) { _ = m.Respond(data) })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
}

// TestLargeCatalogueCostsJobsNothing is row 4: 20 services announce 4,000
// callbacks each. The catalogue keeps its bounds, a real service beside
// them is not crowded out, a job at the minimum memory runs print(1), at
// most CallbackInstallMax callbacks become globals, and the others are
// still reachable through invoke() or the job's allow-list.
func TestLargeCatalogueCostsJobsNothing(t *testing.T) {
	url := startServer(t)
	svcConn := connect(t, url)
	for i := range 20 {
		floodInfo(t, svcConn, fmt.Sprintf("flood%02d", i), 4000)
	}
	var defs []callbacks.Def
	for i := range 80 {
		name := fmt.Sprintf("tools.cb%03d", i)
		defs = append(defs, callbacks.Def{Name: name, Handler: func(context.Context, json.RawMessage) (any, error) { return name, nil }})
	}
	srv, err := callbacks.Start(context.Background(), svcConn, callbacks.Service{Name: "tools", Callbacks: defs, Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Stop() })

	nc := connect(t, url)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	bounds := map[string]int{}
	cat := catalogue.New(ctx, nc, catalogue.Options{RefreshInterval: -1, DiscoveryQuiet: 200 * time.Millisecond, Logger: testLogger(),
		OnIgnore: func(reason string, n int) { bounds[reason] += n }})
	// Discovery ends after DiscoveryQuiet without a reply; on a loaded
	// machine the real service may answer after that, so refresh until the
	// catalogue has it (that it is never crowded out is the point here).
	var entries []catalogue.Entry
	check.For(t, check.Bound, 10*time.Millisecond, func() error {
		if err := cat.Refresh(ctx); err != nil {
			return err
		}
		var err error
		if entries, err = cat.Entries(ctx); err != nil {
			return err
		}
		for i := range 80 {
			if !cat.Has(fmt.Sprintf("tools.cb%03d", i)) {
				return fmt.Errorf("tools.cb%03d not discovered yet (%d entries)", i, len(entries))
			}
		}
		return nil
	})
	if len(entries) != catalogue.DefaultMaxTotal {
		t.Fatalf("catalogue of %d callbacks, want the bound %d (ignored: %v)", len(entries), catalogue.DefaultMaxTotal, bounds)
	}
	cfg := testConfig("w1")
	cfg.Callbacks = cat
	startWorker(t, nc, cfg)
	c := newClient(t, connect(t, url))

	tests := []struct {
		name      string
		callbacks []string
		code      string
		value     string
	}{
		{"print(1) at the minimum memory", nil, "print(1)\nresult = len(list_callbacks())", fmt.Sprint(64)},
		{"not installed, still invocable", nil, "result = await invoke('tools.cb079')", `"tools.cb079"`},
		{"not installed is not a global", nil, "try:\n    tools\nexcept NameError:\n    result = 'absent'", `"absent"`},
		{"named in the allow-list: a global", []string{"tools.cb079"}, "result = await tools.cb079()", `"tools.cb079"`},
		{"unknown names are still unknown", nil,
			"try:\n    await invoke('tools.nope')\nexcept NameError:\n    result = 'unknown'", `"unknown"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			start := time.Now()
			res := runJob(t, c, &jobs.Job{Code: tt.code, Callbacks: tt.callbacks, MemoryMB: 32}, jobs.Handlers{})
			if res.Status != jobs.StatusOK || string(res.Result) != tt.value {
				t.Fatalf("%s result %s (error %+v, stderr %q)", res.Status, res.Result, res.Error, res.Stderr)
			}
			t.Logf("%v round trip, %.1f ms in the sandbox", time.Since(start).Round(time.Millisecond), res.Stats.DurationMS)
		})
	}
}

// TestCancelFloodIsBounded is row 6: 60,000 cancels of jobs that do not
// exist, published as fast as a client can. The worker's memory of them
// stays bounded, the control stream stays within its caps, a print(1)
// job still completes, and a running job is still cancelled.
func TestCancelFloodIsBounded(t *testing.T) {
	const (
		flood    = 60_000
		maxMsgs  = 5_000
		maxBytes = 1 << 20
		remember = 1_000
	)
	url := startServer(t)
	nc := connect(t, url)
	cfg := testConfig("w1")
	cfg.Topology.Control = jobs.ControlLimits{MaxMsgs: maxMsgs, MaxBytes: maxBytes}
	cfg.RememberedCancels = remember
	w := startWorker(t, nc, cfg)
	c := newClient(t, connect(t, url))
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	control, err := js.Stream(ctx, "ERYX_CONTROL")
	if err != nil {
		t.Fatal(err)
	}
	info0, err := control.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}

	// A job that runs until cancelled, started before the flood.
	long, err := c.Watch(ctx, "long")
	if err != nil {
		t.Fatal(err)
	}
	defer long.Stop()
	if _, err := c.Submit(ctx, "", &jobs.Job{ID: "long", Code: "import time\nprint('in', flush=True)\nwhile True: time.sleep(0.01)"}); err != nil {
		t.Fatal(err)
	}
	out := newOutput()
	longRes := make(chan *jobs.Result, 1)
	go func() { res, _ := long.Wait(ctx, out.handlers()); longRes <- res }()
	waitFirstOutput(t, out)

	var before syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &before)
	attacker := connect(t, url)
	body := []byte(`{"v":1,"reason":"flood"}`)
	for i := range flood {
		if err := attacker.Publish(fmt.Sprintf("eryx.t.default.cancel.flood-%d", i), body); err != nil {
			t.Fatal(err)
		}
	}
	if err := attacker.Flush(); err != nil {
		t.Fatal(err)
	}
	testenv.PollUntil(t, 60*time.Second, "the control stream took in the flood", func() bool {
		info, err := control.Info(ctx)
		return err == nil && info.State.LastSeq >= info0.State.LastSeq+flood
	})

	// print(1) completes during and after the flood.
	start := time.Now()
	if res := runJob(t, c, &jobs.Job{Code: "print(1)"}, jobs.Handlers{}); res.Status != jobs.StatusOK || res.Stdout != "1\n" {
		t.Fatalf("print(1): %s %q", res.Status, res.Stdout)
	}
	t.Logf("print(1) after the flood: %v", time.Since(start).Round(time.Millisecond))

	// A running job's cancel is never rate-limited.
	if err := c.Cancel(ctx, "long", "test"); err != nil {
		t.Fatal(err)
	}
	select {
	case res := <-longRes:
		if res == nil || res.Status != jobs.StatusCancelled {
			t.Fatalf("long job: %+v", res)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the running job was not cancelled after the flood")
	}

	var after syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &after)
	cpu := time.Duration(after.Utime.Nano()+after.Stime.Nano()-before.Utime.Nano()-before.Stime.Nano()) * time.Nanosecond
	remembered, dropped := w.CancelStats()
	info, err := control.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d cancels: %d remembered, %d dropped by the rate limit; stream %d msgs / %d bytes; process CPU %v (%v per cancel, embedded server included)",
		flood, remembered, dropped, info.State.Msgs, info.State.Bytes, cpu.Round(time.Millisecond), cpu/flood)
	if remembered > remember {
		t.Fatalf("%d cancels remembered, bound %d", remembered, remember)
	}
	if dropped == 0 {
		t.Fatal("a flood of 60,000 cancels was never rate-limited")
	}
	if info.State.Msgs > maxMsgs || info.State.Bytes > maxBytes {
		t.Fatalf("control stream holds %d msgs / %d bytes, caps %d / %d", info.State.Msgs, info.State.Bytes, maxMsgs, maxBytes)
	}
}

// TestPackageSizeCheckedBeforeDownload is row 5 for packages: a package
// above the limit is refused from its info, without being fetched; one
// whose info lies is cut off by the bounded read.
func TestPackageSizeCheckedBeforeDownload(t *testing.T) {
	const limit = 1 << 20
	url := startServer(t)
	nc := connect(t, url)
	cfg := testConfig("w1")
	cfg.MaxPackageBytes = limit
	startWorker(t, nc, cfg)
	c := newClient(t, connect(t, url))
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	obs, err := js.ObjectStore(context.Background(), "ERYX_PACKAGES")
	if err != nil {
		t.Fatal(err)
	}
	big := make([]byte, 20<<20)
	_, _ = rand.Read(big)
	for _, name := range []string{"big.zip", "liar.zip"} {
		if _, err := obs.PutBytes(context.Background(), jobs.PackageObject(jobs.DefaultTenant, name), big); err != nil {
			t.Fatal(err)
		}
	}
	testenv.ForgeObjectSize(t, js, "ERYX_PACKAGES", jobs.PackageObject(jobs.DefaultTenant, "liar.zip"), 1000)

	tests := []struct {
		pkg      string
		maxBytes uint64 // the worker's connection may receive
	}{
		{"big.zip", 256 << 10},
		{"liar.zip", 8 << 20},
	}
	for _, tt := range tests {
		t.Run(tt.pkg, func(t *testing.T) {
			before := nc.Stats().InBytes
			res := runJob(t, c, &jobs.Job{Code: "print(1)", Packages: []string{tt.pkg}}, jobs.Handlers{})
			got := nc.Stats().InBytes - before
			if res.Status != jobs.StatusRejected || res.Code != jobs.CodeBadPackage || !strings.Contains(res.Reason, "limit") {
				t.Fatalf("%s %s %q", res.Status, res.Code, res.Reason)
			}
			if got > tt.maxBytes {
				t.Fatalf("the worker received %d bytes for a refused package, want at most %d", got, tt.maxBytes)
			}
			t.Logf("refused after %d bytes: %s", got, res.Reason)
		})
	}
	if res := runJob(t, c, &jobs.Job{Code: "print(1)"}, jobs.Handlers{}); res.Status != jobs.StatusOK {
		t.Fatalf("the worker stopped serving: %s", res.Status)
	}
}

// TestSessionSnapshotSizeCheckedBeforeDownload is row 5 for sessions: an
// entry pointing at a blob and claiming 300 MiB is refused before any of
// the blob is fetched, and the job is rejected, not retried.
func TestSessionSnapshotSizeCheckedBeforeDownload(t *testing.T) {
	url := startServer(t)
	nc := connect(t, url)
	cfg := sessionConfig(t, nc, "w1")
	startWorker(t, nc, cfg)
	c := newClient(t, connect(t, url))
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	obs, err := js.ObjectStore(ctx, kvstate.DefaultBlobBucket)
	if err != nil {
		t.Fatal(err)
	}
	blob := make([]byte, 8<<20)
	if _, err := obs.PutBytes(ctx, "victim/blob", blob); err != nil {
		t.Fatal(err)
	}
	meta, _ := json.Marshal(kvstate.Meta{Size: 300 << 20, Blob: "victim/blob", TTL: time.Hour})
	msg := nats.NewMsg("$KV." + kvstate.DefaultBucket + "." + jobs.SessionKey(jobs.DefaultTenant, "victim"))
	msg.Header.Set(kvstate.HeaderMeta, string(meta))
	if _, err := js.PublishMsg(ctx, msg); err != nil {
		t.Fatal(err)
	}

	before := nc.Stats().InBytes
	res := runJob(t, c, &jobs.Job{Session: "victim", Code: "print(1)"}, jobs.Handlers{})
	got := nc.Stats().InBytes - before
	if res.Status != jobs.StatusRejected || res.Code != jobs.CodeTooLarge {
		t.Fatalf("%s %s %q", res.Status, res.Code, res.Reason)
	}
	if got > 256<<10 {
		t.Fatalf("the worker received %d bytes for a refused snapshot", got)
	}
	t.Logf("refused after %d bytes: %s", got, res.Reason)
}

// TestWarmSessionsUnderMemoryBudget is row 7: sessions pinning memory
// outside their namespace (sys._hog) are evicted to keep the warm
// sessions within the budget, and lose nothing (their state is in KV); a
// session whose job ran out of memory is saved but not kept warm.
func TestWarmSessionsUnderMemoryBudget(t *testing.T) {
	const budget = 150 << 20
	url := startServer(t)
	nc := connect(t, url)
	cfg := sessionConfig(t, nc, "w1")
	cfg.SessionMemory = budget
	cfg.SessionCache = 3 // the test pool has 5 sandboxes: 1 job + 3 warm
	var evictions atomic.Int64
	cfg.OnBound = func(bound string) {
		if bound == worker.BoundSessionMemory {
			evictions.Add(1)
		}
	}
	w := startWorker(t, nc, cfg)
	c := newClient(t, connect(t, url))

	for i := range 5 {
		res := runJob(t, c, &jobs.Job{Session: fmt.Sprintf("hog%d", i),
			Code: fmt.Sprintf("import sys\nsys._hog = bytearray(60 << 20)\nx = %d", i)}, jobs.Handlers{})
		if res.Status != jobs.StatusOK {
			t.Fatalf("hog%d: %s %+v %s", i, res.Status, res.Error, res.SessionError)
		}
		n, bytes := w.WarmSessions()
		t.Logf("after hog%d (%d MiB): %d warm sessions, %d MiB", i, res.Stats.PeakMemoryBytes>>20, n, bytes>>20)
		if bytes > budget {
			t.Fatalf("warm sessions hold %d bytes, budget %d", bytes, budget)
		}
	}
	if evictions.Load() == 0 {
		t.Fatal("no session was evicted for the budget")
	}
	// Evicted sessions lost nothing.
	for i := range 5 {
		res := runJob(t, c, &jobs.Job{Session: fmt.Sprintf("hog%d", i), Code: "print(x)"}, jobs.Handlers{})
		if res.Status != jobs.StatusOK || res.Stdout != fmt.Sprintf("%d\n", i) {
			t.Fatalf("hog%d after eviction: %s %q %+v", i, res.Status, res.Stdout, res.Error)
		}
	}

	// MemoryError: the state is saved, the sandbox is not kept.
	runJob(t, c, &jobs.Job{Session: "oom", Code: "y = 7"}, jobs.Handlers{})
	res := runJob(t, c, &jobs.Job{Session: "oom", Code: "y = 8\nhuge = [bytearray(4 << 20) for _ in range(100)]"}, jobs.Handlers{})
	if res.Status != jobs.StatusError || res.Error == nil || res.Error.Type != "MemoryError" {
		t.Fatalf("oom job: %s %+v", res.Status, res.Error)
	}
	if !res.Stats.MemoryLimitHit || res.SessionRevision == 0 {
		t.Fatalf("oom job: memory limit hit %v, revision %d (%s)", res.Stats.MemoryLimitHit, res.SessionRevision, res.SessionError)
	}
	oomPeak := res.Stats.PeakMemoryBytes
	n1, bytes1 := w.WarmSessions()
	res = runJob(t, c, &jobs.Job{Session: "oom", Code: "print(y)"}, jobs.Handlers{})
	if res.Status != jobs.StatusOK || res.Stdout != "8\n" {
		t.Fatalf("after MemoryError: %s %q %+v", res.Status, res.Stdout, res.Error)
	}
	// The sandbox that hit the limit was dropped: the session came back
	// from KV into a fresh, small one.
	if res.Stats.PeakMemoryBytes >= 100<<20 {
		t.Fatalf("the session kept its out-of-memory sandbox (%d MiB)", res.Stats.PeakMemoryBytes>>20)
	}
	t.Logf("after the MemoryError (at %d MiB): %d warm sessions, %d MiB; next job ran in %d MiB", oomPeak>>20, n1, bytes1>>20, res.Stats.PeakMemoryBytes>>20)
}
