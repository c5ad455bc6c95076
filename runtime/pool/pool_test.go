package pool_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/eryx-dev/eryx/internal/check"
	"github.com/eryx-dev/eryx/internal/testenv"
	"github.com/eryx-dev/eryx/runtime/pool"
	"github.com/eryx-dev/eryx/runtime/sandbox"
)

var engine *sandbox.Engine

func TestMain(m *testing.M) { testenv.Main(m, "pool", &engine) }

func newPool(t *testing.T, cfg pool.Config) *pool.Pool {
	t.Helper()
	p, err := pool.New(context.Background(), engine, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close(context.Background()) })
	return p
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	check.Until(t, check.Bound, what, cond)
}

func TestWarmsUpToMinIdle(t *testing.T) {
	p := newPool(t, pool.Config{MaxSize: 4, MinIdle: 3})
	waitFor(t, "3 idle", func() bool { return p.Stats().Idle == 3 })
	sb, ok := p.TryAcquire()
	if !ok {
		t.Fatal("TryAcquire found nothing idle")
	}
	st := p.Stats()
	if st.InUse != 1 || st.Acquisitions != 1 {
		t.Fatalf("stats %+v", st)
	}
	p.Release(sb)
	waitFor(t, "3 idle again", func() bool { return p.Stats().Idle == 3 })
	// Reset in place and kept, or closed and replaced.
	if st := p.Stats(); st.Creations+st.Resets != 4 || st.InUse != 0 {
		t.Fatalf("stats %+v", st)
	}
}

// 200 concurrent jobs through a pool of 8: nothing deadlocks, the pool never
// exceeds its size, and every job gets a sandbox that is new or reset to
// new: none sees what an earlier job did.
func TestUnderLoadEveryJobGetsAFreshSandbox(t *testing.T) {
	p := newPool(t, pool.Config{MaxSize: 8, MinIdle: 4, AcquireTimeout: time.Minute})
	const jobs = 200
	var wg sync.WaitGroup
	errs := make(chan error, jobs)
	var mu sync.Mutex
	maxInUse := 0
	for i := 0; i < jobs; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			ctx := context.Background()
			sb, err := p.Acquire(ctx)
			if err != nil {
				errs <- err
				return
			}
			defer p.Release(sb)
			mu.Lock()
			maxInUse = max(maxInUse, p.Stats().InUse)
			mu.Unlock()
			res, err := sb.Execute(ctx, fmt.Sprintf("import builtins\nassert not hasattr(builtins, 'used_by'), builtins.used_by\nbuiltins.used_by = %d", i), sandbox.ExecOptions{})
			if err != nil || res.Status != sandbox.StatusOK {
				errs <- fmt.Errorf("job %d: %w (result %+v)", i, err, res)
			}
		}(i)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	st := p.Stats()
	if st.Acquisitions != jobs || st.InUse != 0 || maxInUse > 8 {
		t.Fatalf("stats %+v, max in use %d", st, maxInUse)
	}
	if st.Creations+st.Resets < jobs {
		t.Fatalf("%d creations and %d resets for %d jobs: a sandbox was reused without a reset", st.Creations, st.Resets, jobs)
	}
	if engine.SlotReset() && st.Resets == 0 {
		t.Fatalf("in-place resets available but none done: %+v", st)
	}
	t.Logf("stats %+v", st)
}

func TestAcquireTimeout(t *testing.T) {
	p := newPool(t, pool.Config{MaxSize: 2, MinIdle: 1, AcquireTimeout: 150 * time.Millisecond})
	ctx := context.Background()
	a, err := p.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	b, err := p.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if _, err := p.Acquire(ctx); !errors.Is(err, pool.ErrAcquireTimeout) {
		t.Fatalf("err = %v, want ErrAcquireTimeout", err)
	}
	// Never early (a lower bound holds on any machine).
	if d := time.Since(start); d < 150*time.Millisecond {
		t.Fatalf("gave up after %v", d)
	}
	if _, ok := p.TryAcquire(); ok {
		t.Fatal("TryAcquire succeeded on a full pool")
	}
	// A release wakes a waiter.
	got := make(chan error, 1)
	go func() {
		sb, err := p.Acquire(ctx)
		if err == nil {
			p.Release(sb)
		}
		got <- err
	}()
	waitFor(t, "a waiter", func() bool { return p.Stats().Waiting == 1 })
	p.Release(a)
	if err := <-got; err != nil {
		t.Fatalf("waiter: %v", err)
	}
	p.Release(b)
	if st := p.Stats(); st.Waits < 2 || st.TotalWait < 150*time.Millisecond {
		t.Fatalf("stats %+v", st)
	}
}

func TestAcquireHonoursContext(t *testing.T) {
	p := newPool(t, pool.Config{MaxSize: 1, AcquireTimeout: time.Minute})
	sb, err := p.Acquire(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer p.Release(sb)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := p.Acquire(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v", err)
	}
}

func TestIdleTimeoutShrinksToMinIdle(t *testing.T) {
	p := newPool(t, pool.Config{MaxSize: 4, MinIdle: 1, IdleTimeout: 50 * time.Millisecond})
	ctx := context.Background()
	var sbs []*sandbox.Sandbox
	for i := 0; i < 4; i++ {
		sb, err := p.Acquire(ctx)
		if err != nil {
			t.Fatal(err)
		}
		sbs = append(sbs, sb)
	}
	for _, sb := range sbs {
		p.Release(sb)
	}
	waitFor(t, "1 idle", func() bool { return p.Stats().Idle == 1 })
}

func TestClosedPool(t *testing.T) {
	p := newPool(t, pool.Config{MaxSize: 2})
	if err := p.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Acquire(context.Background()); !errors.Is(err, pool.ErrClosed) {
		t.Fatalf("err = %v", err)
	}
}

func TestJobMemoryCanOnlyNarrow(t *testing.T) {
	p := newPool(t, pool.Config{MaxSize: 2, Limits: sandbox.Limits{MemoryBytes: 256 << 20}})
	ctx := context.Background()
	sb, err := p.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Release(sb)
	res, err := sb.Execute(ctx, "x = bytearray(100 * 1024 * 1024)", sandbox.ExecOptions{Limits: sandbox.Limits{MemoryBytes: 64 << 20}})
	if err != nil || res.Error == nil || res.Error.Type != "MemoryError" {
		t.Fatalf("narrowed limit not applied: %v %+v", err, res)
	}
}

// A released sandbox is reset in place and handed out again; one its job
// left unusable, or whose reset fails, is closed and counted.
func TestReleaseResetsRetiresOrReportsSandboxes(t *testing.T) {
	if !engine.SlotReset() {
		t.Skipf("in-place resets unavailable: %s", engine.Stats().SlotResetFallback)
	}
	tests := []struct {
		name     string
		code     string
		limits   sandbox.Limits
		reused   bool
		resetErr bool
		want     func(pool.Stats) bool
	}{
		{"normal end", "import builtins\nbuiltins.used = 1", sandbox.Limits{}, true, false,
			func(s pool.Stats) bool { return s.Resets == 1 }},
		{"exception", "raise ValueError('x')", sandbox.Limits{}, true, false,
			func(s pool.Stats) bool { return s.Resets == 1 }},
		{"memory limit", "x = bytearray(100 * 2**20)", sandbox.Limits{MemoryBytes: 64 << 20}, false, false,
			func(s pool.Stats) bool { return s.Retired == 1 && s.Resets == 0 }},
		{"hard stop", "sum(range(10**15))", sandbox.Limits{Timeout: 200 * time.Millisecond}, false, false,
			func(s pool.Stats) bool { return s.Retired == 1 && s.Resets == 0 }},
		{"failed reset", "import os\nfor fd in range(3, 9):\n    try:\n        os.close(fd)\n    except OSError:\n        pass", sandbox.Limits{}, false, true,
			func(s pool.Stats) bool { return s.ResetErrors == 1 && s.Resets == 0 }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var mu sync.Mutex
			var resetErrs []error
			p := newPool(t, pool.Config{MaxSize: 2, MinIdle: 1, OnResetError: func(err error) {
				mu.Lock()
				resetErrs = append(resetErrs, err)
				mu.Unlock()
			}})
			ctx := context.Background()
			sb, err := p.Acquire(ctx)
			if err != nil {
				t.Fatal(err)
			}
			_, _ = sb.Execute(ctx, tt.code, sandbox.ExecOptions{Limits: tt.limits})
			p.Release(sb)
			if st := p.Stats(); !tt.want(st) {
				t.Fatalf("stats %+v", st)
			}
			next, err := p.Acquire(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer p.Release(next)
			if (next == sb) != tt.reused {
				t.Fatalf("handed out the same sandbox again: %v, want %v", next == sb, tt.reused)
			}
			res, err := next.Execute(ctx, "import builtins\nassert not hasattr(builtins, 'used')", sandbox.ExecOptions{})
			if err != nil || res.Status != sandbox.StatusOK {
				t.Fatalf("next job: %v %+v", err, res)
			}
			mu.Lock()
			defer mu.Unlock()
			if got := len(resetErrs) == 1 && errors.Is(resetErrs[0], sandbox.ErrResetFailed); got != tt.resetErr {
				t.Fatalf("OnResetError got %v", resetErrs)
			}
		})
	}
}

func TestNoReuseClosesEverySandbox(t *testing.T) {
	p := newPool(t, pool.Config{MaxSize: 2, MinIdle: 1, NoReuse: true})
	ctx := context.Background()
	sb, err := p.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	p.Release(sb)
	next, err := p.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Release(next)
	if next == sb || p.Stats().Resets != 0 {
		t.Fatalf("reused with NoReuse: %+v", p.Stats())
	}
}
