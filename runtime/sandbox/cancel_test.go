package sandbox_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/eryx-dev/eryx/internal/check"
	"github.com/eryx-dev/eryx/runtime/sandbox"
)

// Each of these must stop within a second of cancellation, including C-level
// loops that never return to the interpreter's eval loop.
var stubbornCode = []struct{ name, code string }{
	{"python loop", "while True:\n    pass"},
	{"sleep", "import time\ntime.sleep(60)"},
	{"asyncio sleep", "import asyncio\nawait asyncio.sleep(60)"},
	{"sum of range", "sum(range(10**15))"},
	{"deque of count", "import collections, itertools\ncollections.deque(itertools.count(), maxlen=0)"},
	{"regex backtracking", "import re\nre.match('(a+)+$', 'a' * 40 + 'b')"},
	{"swallowed interrupt", "while True:\n    try:\n        while True:\n            pass\n    except BaseException:\n        pass"},
	{"sleep in finally", "import time\ntry:\n    time.sleep(60)\nfinally:\n    time.sleep(60)"},
}

// Code that would run for hours stops when its context is cancelled. The
// cancel comes after the code has printed, so it is the loop that gets
// interrupted. How fast is BenchmarkCancelLatency's business, not a test's.
func TestCancellation(t *testing.T) {
	t.Parallel()
	for _, tt := range stubbornCode {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			var once sync.Once
			stop := time.AfterFunc(check.Bound, func() { t.Error("still running long after the cancel") })
			defer stop.Stop()
			res, err := engine.Execute(ctx, "print('go')\n"+tt.code, sandbox.ExecOptions{
				OnOutput: func(sandbox.Stream, []byte) { once.Do(cancel) },
			})
			if !errors.Is(err, sandbox.ErrCancelled) || !errors.Is(err, context.Canceled) {
				t.Fatalf("err = %v, want ErrCancelled", err)
			}
			if res.Status != sandbox.StatusCancelled || res.Stdout != "go\n" {
				t.Fatalf("status %q, stdout %q", res.Status, res.Stdout)
			}
		})
	}
}

func TestTimeoutStopsCLevelLoops(t *testing.T) {
	t.Parallel()
	for _, tt := range stubbornCode {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			res, err := engine.Execute(context.Background(), tt.code,
				sandbox.ExecOptions{Limits: sandbox.Limits{Timeout: 200 * time.Millisecond}})
			if !errors.Is(err, sandbox.ErrTimeout) || res.Status != sandbox.StatusTimeout {
				t.Fatalf("err = %v, status %v", err, res.Status)
			}
		})
	}
}

func TestContextDeadlineIsTimeout(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	res, err := engine.Execute(ctx, "while True: pass", sandbox.ExecOptions{})
	if !errors.Is(err, sandbox.ErrTimeout) || !errors.Is(err, context.DeadlineExceeded) || res.Status != sandbox.StatusTimeout {
		t.Fatalf("err = %v, result %+v", err, res)
	}
}

func TestAlreadyCancelledContext(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	res, err := engine.Execute(ctx, "print('must not run')", sandbox.ExecOptions{})
	if !errors.Is(err, sandbox.ErrCancelled) || res.Stdout != "" {
		t.Fatalf("err = %v, result %+v", err, res)
	}
}

// A soft stop keeps the sandbox usable: a session survives a cancelled cell.
func TestSoftStopKeepsSession(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	sb, err := engine.NewSandbox(ctx, sandbox.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sb.Close(ctx) }()
	if _, err := sb.Execute(ctx, "counter = 1", sandbox.ExecOptions{Session: true}); err != nil {
		t.Fatal(err)
	}
	_, err = sb.Execute(ctx, "while True:\n    counter += 1", sandbox.ExecOptions{Session: true,
		Limits: sandbox.Limits{Timeout: 100 * time.Millisecond}})
	if !errors.Is(err, sandbox.ErrTimeout) {
		t.Fatalf("err = %v", err)
	}
	res, err := sb.Execute(ctx, "print(counter > 1)", sandbox.ExecOptions{Session: true})
	if err != nil || res.Stdout != "True\n" {
		t.Fatalf("err %v, result %+v", err, res)
	}
}

// A hard stop destroys the sandbox but nothing else.
func TestHardStopClosesOnlyThatSandbox(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	sb, err := engine.NewSandbox(ctx, sandbox.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sb.Close(ctx) }()
	_, err = sb.Execute(ctx, "sum(range(10**15))", sandbox.ExecOptions{Limits: sandbox.Limits{Timeout: 100 * time.Millisecond}})
	if !errors.Is(err, sandbox.ErrTimeout) {
		t.Fatalf("err = %v", err)
	}
	if _, err := sb.Execute(ctx, "pass", sandbox.ExecOptions{}); !errors.Is(err, sandbox.ErrSandboxClosed) {
		t.Fatalf("after a hard stop: err = %v, want ErrSandboxClosed", err)
	}
	res := run(t, "print('still fine')", sandbox.ExecOptions{})
	if res.Stdout != "still fine\n" {
		t.Fatalf("result %+v", res)
	}
}

func TestSandboxCancel(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	sb, err := engine.NewSandbox(ctx, sandbox.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sb.Close(ctx) }()
	sb.Cancel() // nothing running: harmless
	var once sync.Once
	started := make(chan struct{})
	go func() {
		<-started
		sb.Cancel()
	}()
	res, err := sb.Execute(ctx, "print('go')\nwhile True:\n    pass", sandbox.ExecOptions{
		OnOutput: func(sandbox.Stream, []byte) { once.Do(func() { close(started) }) },
	})
	if !errors.Is(err, sandbox.ErrCancelled) || res.Status != sandbox.StatusCancelled {
		t.Fatalf("err = %v, status %v", err, res.Status)
	}
	// A soft stop: the sandbox still works.
	if res, err := sb.Execute(ctx, "print('again')", sandbox.ExecOptions{}); err != nil || res.Stdout != "again\n" {
		t.Fatalf("after Cancel: %v %+v", err, res)
	}
}
