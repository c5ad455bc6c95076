// Package check holds the one way tests wait for something: poll a
// condition until it holds, with a generous bound, and report the last
// reason it did not. Tests never sleep to synchronise and never assert how
// long something took; machines differ several times in speed.
package check

import (
	"context"
	"errors"
	"os"
	"testing"
	"time"
)

// Bound is the default limit for For: generous, because a slow or busy
// machine must not fail a test that is correct.
const Bound = 30 * time.Second

// For calls f every interval until it returns nil, and fails the test with
// f's last error if that has not happened within total. It is nats-server's
// checkFor: the failure says why the condition still did not hold.
func For(tb testing.TB, total, interval time.Duration, f func() error) {
	tb.Helper()
	if err := Poll(context.Background(), total, interval, f); err != nil {
		tb.Fatalf("%v", err)
	}
}

// Poll is For without a test: it returns nil once f does, or f's last error
// (wrapped with how long it tried) when total or ctx runs out.
func Poll(ctx context.Context, total, interval time.Duration, f func() error) error {
	ctx, cancel := context.WithTimeout(ctx, total)
	defer cancel()
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		err := f()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return &TimeoutError{Total: total, Last: err}
		case <-t.C:
		}
	}
}

// TimeoutError is the error of a condition that never held.
type TimeoutError struct {
	Total time.Duration
	Last  error
}

func (e *TimeoutError) Error() string {
	return "condition not met after " + e.Total.String() + ": " + e.Last.Error()
}

func (e *TimeoutError) Unwrap() error { return e.Last }

// Needs stops a test whose outside dependency (a Debian package, Node.js)
// is missing: a skip on a developer's machine, a failure in CI (CI set in
// the environment, as .ci/run does), where .ci/install-deps provides it.
func Needs(tb testing.TB, err error, what string) {
	tb.Helper()
	if err == nil {
		return
	}
	if os.Getenv("CI") != "" {
		tb.Fatalf("%s is missing in CI (.ci/install-deps should install it): %v", what, err)
	}
	tb.Skipf("%s is not installed here: %v", what, err)
}

// Until is For for a condition without a reason: it fails the test with
// what if cond has not held within total.
func Until(tb testing.TB, total time.Duration, what string, cond func() bool) {
	tb.Helper()
	For(tb, total, 10*time.Millisecond, func() error {
		if !cond() {
			return errors.New("still waiting for " + what)
		}
		return nil
	})
}
