package testenv

import (
	"testing"
	"time"
)

// PollUntil polls cond every few milliseconds until it holds, failing the
// test with what if it does not within bound. Bounds are generous: they
// catch a hang, they do not measure speed.
func PollUntil(t testing.TB, bound time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(bound)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %v: %s", bound, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
