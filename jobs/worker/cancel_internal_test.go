package worker

import (
	"context"
	"errors"
	"fmt"
	"testing"
)

// TestCancelRingForgetsOldestFirst checks the remembered cancels' ring:
// bounded, oldest overwritten first, a running job always stopped, and
// the rate limit only on cancels of jobs not running here.
func TestCancelRingForgetsOldestFirst(t *testing.T) {
	r := newCancelRegistry(3, 1e9, 1e9)
	for i := range 5 {
		r.cancel(fmt.Sprintf("j%d", i))
	}
	if n, _ := r.stats(); n != 3 {
		t.Fatalf("%d remembered, bound 3", n)
	}
	noop := func(error) {}
	for id, want := range map[string]bool{"j0": false, "j1": false, "j2": true, "j3": true, "j4": true} {
		cancelled, _ := r.start(id, noop)
		if cancelled != want {
			t.Errorf("%s cancelled = %v, want %v", id, cancelled, want)
		}
	}

	limited := newCancelRegistry(100, 1, 1)
	if got := limited.cancel("a"); got != cancelRemembered {
		t.Fatalf("first cancel: %v", got)
	}
	if got := limited.cancel("b"); got != cancelDropped {
		t.Fatalf("over the rate: %v", got)
	}
	ctx, stop := context.WithCancelCause(context.Background())
	defer stop(nil)
	limited.start("run", stop)
	if got := limited.cancel("run"); got != cancelStopped || !errorsIsUserCancel(ctx) {
		t.Fatalf("running job over the rate: %v", got)
	}
}

func errorsIsUserCancel(ctx context.Context) bool {
	return errors.Is(context.Cause(ctx), errUserCancel)
}
