package sandbox_test

import (
	"context"
	"encoding/json"
	"errors"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/eryx-dev/eryx/runtime/sandbox"
)

// Issue 10, rows 1-3: what a job makes the host hold is bounded by its
// budgets, checked before anything is copied out of the guest. Each attack
// is a scaled-down reproduction from the issue; each test asserts the
// job's typed error, that the worker's Go heap grew by no more than the
// budget allows (TotalAlloc counts every byte allocated, so it also bounds
// what was live), and that the next execution still works.
//
// These tests are not parallel: TotalAlloc is process-wide.

// holdHost serves "test.hold": a call that only returns when its execution
// ends, so that every admitted payload stays held.
type holdHost struct{}

func (holdHost) HostOp(op string) (int, bool) { return 2 << 20, op == "test.hold" }

func (holdHost) HostCall(ctx context.Context, _ string, _ []byte) ([]byte, error) {
	<-ctx.Done()
	return nil, ctx.Err()
}

// allocated runs fn and returns the bytes the Go heap allocated meanwhile.
func allocated(fn func()) uint64 {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	fn()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// baseline is what a harmless execution of the same shape allocates.
func baseline(t *testing.T, opts sandbox.ExecOptions) uint64 {
	t.Helper()
	return allocated(func() {
		res := run(t, "x = 1", opts)
		if res.Status != sandbox.StatusOK {
			t.Fatalf("baseline: %s %+v", res.Status, res.Error)
		}
	})
}

func wantLimit(t *testing.T, res *sandbox.Result, err error, limits ...string) {
	t.Helper()
	var le *sandbox.LimitError
	if !errors.Is(err, sandbox.ErrLimitExceeded) || !errors.As(err, &le) {
		t.Fatalf("error %v, want a LimitError", err)
	}
	if res.Status != sandbox.StatusLimit || res.Limit == nil || res.Error == nil || res.Error.Type != "eryx.LimitExceeded" {
		t.Fatalf("result %s limit %+v error %+v", res.Status, res.Limit, res.Error)
	}
	for _, l := range limits {
		if res.Limit.Limit == l {
			if !strings.Contains(res.Error.Message, l) {
				t.Errorf("error message %q does not name the limit", res.Error.Message)
			}
			return
		}
	}
	t.Fatalf("limit %s, want one of %v", res.Limit.Limit, limits)
}

func stillWorks(t *testing.T) {
	t.Helper()
	if res := run(t, "result = 6 * 7", sandbox.ExecOptions{}); res.Status != sandbox.StatusOK || string(res.Value) != "42" {
		t.Fatalf("the next execution: %s %s %+v", res.Status, res.Value, res.Error)
	}
}

func TestHostCallFloodIsBounded(t *testing.T) {
	const mib = 1 << 20
	lim := sandbox.Limits{MemoryBytes: 64 << 20, HostCalls: 64, HostCallBytes: 4 * mib}
	tests := []struct {
		name   string
		opts   sandbox.ExecOptions
		code   string
		limits []string
		// unbounded is what the attack would make the host copy without
		// the budget, to show the bound means something.
		unbounded uint64
	}{
		{
			// Row 1 with an operation that is served: each payload is
			// copied and held until the job ends.
			name:   "held payloads",
			opts:   sandbox.ExecOptions{Limits: lim, Host: holdHost{}},
			code:   "import _eryxhost\nb = b'A' * (1 << 20)\nfor i in range(300):\n    _eryxhost.call('test.hold', b)\n",
			limits: []string{sandbox.LimitHostCallBytes}, unbounded: 300 * mib,
		},
		{
			// Row 1 as reported: a made-up operation is refused before
			// its payload is read, so only the count of refusals the guest
			// never collects can grow... and nothing is registered at all.
			name: "unknown operation",
			opts: sandbox.ExecOptions{Limits: lim, Host: holdHost{}},
			code: "import _eryxhost\nb = b'A' * (1 << 20)\nhandles = {_eryxhost.call('net.nope', b) for i in range(300)}\nassert handles == {-1}, handles\n",
		},
		{
			// Without any host handler, the refusals are answered, and
			// the answers the guest never collects are counted.
			name:   "uncollected refusals",
			opts:   sandbox.ExecOptions{Limits: lim},
			code:   "import _eryxhost\nb = b'A' * (1 << 20)\nfor i in range(300):\n    _eryxhost.call('net.nope', b)\n",
			limits: []string{sandbox.LimitHostCalls},
		},
		{
			// Row 2: concurrent callbacks with large arguments.
			name:   "concurrent callbacks",
			opts:   sandbox.ExecOptions{Limits: lim, Callbacks: testCallbacks(new(atomic.Int64))},
			code:   "import asyncio\npad = 'A' * 900_000\nawait asyncio.gather(*[invoke('slow', ms=60_000, pad=pad) for _ in range(1000)])\n",
			limits: []string{sandbox.LimitHostCallBytes}, unbounded: 1000 * 900_000,
		},
		{
			// Many small concurrent calls: the count is bounded too.
			name:   "many small callbacks",
			opts:   sandbox.ExecOptions{Limits: lim, Callbacks: testCallbacks(new(atomic.Int64))},
			code:   "import asyncio\nawait asyncio.gather(*[slow(ms=60_000) for _ in range(1000)])\n",
			limits: []string{sandbox.LimitHostCalls},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			base := baseline(t, tt.opts)
			var res *sandbox.Result
			var err error
			grew := allocated(func() { res, err = engine.Execute(context.Background(), tt.code, tt.opts) })
			if tt.limits == nil {
				if err != nil || res.Status != sandbox.StatusOK {
					t.Fatalf("%v %s %+v", err, res.Status, res.Error)
				}
			} else {
				wantLimit(t, res, err, tt.limits...)
			}
			// The budget, plus the payload being checked when it was hit,
			// plus slack for the bookkeeping of HostCalls calls.
			bound := base + uint64(lim.HostCallBytes) + 2*mib + uint64(lim.HostCalls)*4<<10
			t.Logf("allocated %d KiB (baseline %d KiB, bound %d KiB)", grew>>10, base>>10, bound>>10)
			if grew > bound {
				t.Errorf("the host allocated %d bytes, above the %d the budget allows", grew, bound)
			}
			if tt.unbounded != 0 && bound >= tt.unbounded/4 {
				t.Errorf("bound %d is not meaningfully below the unbounded %d", bound, tt.unbounded)
			}
			stillWorks(t)
		})
	}
}

// TestCollectedCallsStayWithinBudget: a budget caps what is held at once,
// not what a job may do in total; calls beyond the running limit wait.
func TestCollectedCallsStayWithinBudget(t *testing.T) {
	opts := sandbox.ExecOptions{
		Limits:    sandbox.Limits{HostCalls: 8, HostCallBytes: 1 << 20, HostCallsRunning: 2},
		Callbacks: testCallbacks(new(atomic.Int64)),
	}
	// 50 sequential 100 KB calls: 5 MB in total, 100 KB at a time; then
	// a gather of 8, only 2 of which run at once.
	code := "pad = 'A' * 100_000\nfor i in range(50):\n    r = await echo(message=pad)\n    assert len(r) == 100_000\n" +
		"import asyncio\nr = await asyncio.gather(*[slow(ms=1) for _ in range(8)])\nresult = len(r)\n"
	res, err := engine.Execute(context.Background(), code, opts)
	if err != nil || res.Status != sandbox.StatusOK || string(res.Value) != "8" {
		t.Fatalf("%v %s %s %+v", err, res.Status, res.Value, res.Error)
	}
}

// TestCallbackReplyCountsAgainstBudget: a reply held for the guest counts
// too; one above the budget ends the execution.
func TestCallbackReplyCountsAgainstBudget(t *testing.T) {
	opts := sandbox.ExecOptions{Limits: sandbox.Limits{HostCallBytes: 1 << 20}, Callbacks: testCallbacks(new(atomic.Int64))}
	res, err := engine.Execute(context.Background(), "r = await big(n=2_000_000)\n", opts)
	wantLimit(t, res, err, sandbox.LimitHostCallBytes)
	stillWorks(t)
}

func TestTraceFloodIsBounded(t *testing.T) {
	const lim = 256 << 10
	tests := []struct {
		name      string
		code      string
		maxEvents int
		// unbounded is what the attack would deliver without the limits.
		unbounded int
	}{
		{
			// Row 3: events too large for one message are dropped unread.
			name:      "huge events",
			code:      "import _eryxhost, json\nev = json.dumps({'kind': 'line', 'function': 'x' * 900_000}).encode()\nfor i in range(300):\n    _eryxhost.emit('trace', ev)\n",
			maxEvents: 10_000, unbounded: 300 * 900_000,
		},
		{
			// Events just below the per-event cap hit the byte budget.
			name:      "large events",
			code:      "import _eryxhost, json\nev = json.dumps({'kind': 'line', 'function': 'x' * 60_000}).encode()\nfor i in range(300):\n    _eryxhost.emit('trace', ev)\n",
			maxEvents: 10_000, unbounded: 300 * 60_000,
		},
		{
			// Tracing a long loop hits the event count.
			name:      "many events",
			code:      "n = 0\nfor i in range(5000):\n    n += i\n",
			maxEvents: 1000, unbounded: 5000,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var mu sync.Mutex
			var events []sandbox.TraceEvent
			var bytes int
			opts := sandbox.ExecOptions{
				Limits: sandbox.Limits{TraceBytes: lim, TraceEvents: tt.maxEvents},
				OnTrace: func(ev sandbox.TraceEvent) {
					b, _ := json.Marshal(ev)
					mu.Lock()
					events = append(events, ev)
					bytes += len(b)
					mu.Unlock()
				},
			}
			base := baseline(t, opts)
			mu.Lock()
			events, bytes = nil, 0
			mu.Unlock()
			var res *sandbox.Result
			var err error
			grew := allocated(func() { res, err = engine.Execute(context.Background(), tt.code, opts) })
			if err != nil || res.Status != sandbox.StatusOK {
				t.Fatalf("%v %s %+v", err, res.Status, res.Error)
			}
			if !res.TraceTruncated {
				t.Error("trace not flagged as truncated")
			}
			mu.Lock()
			defer mu.Unlock()
			if len(events) > tt.maxEvents+1 || bytes > lim+(len(events)*256) {
				t.Errorf("%d events, %d bytes delivered: above the limits (%d events, %d bytes)", len(events), bytes, tt.maxEvents, lim)
			}
			if tt.name != "huge events" {
				if last := events[len(events)-1]; last.Kind != sandbox.TraceTruncatedKind || last.Error == nil {
					t.Errorf("last event %+v, want the truncation marker", last)
				}
			}
			// Every delivered event was parsed once (a few copies of it)
			// and the overflow never was.
			bound := base + 4*uint64(lim) + 8<<20
			t.Logf("%d events, %d bytes delivered; allocated %d KiB (baseline %d KiB, bound %d KiB)",
				len(events), bytes, grew>>10, base>>10, bound>>10)
			if grew > bound {
				t.Errorf("the host allocated %d bytes, above the %d the limits allow", grew, bound)
			}
			stillWorks(t)
		})
	}
}
