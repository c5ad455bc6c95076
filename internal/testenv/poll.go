package testenv

import (
	"testing"
	"time"

	"github.com/eryx-dev/eryx/internal/check"
)

// PollUntil polls cond every few milliseconds until it holds, failing the
// test with what if it does not within bound. Bounds are generous: they
// catch a hang, they do not measure speed.
func PollUntil(t testing.TB, bound time.Duration, what string, cond func() bool) {
	t.Helper()
	check.Until(t, bound, what, cond)
}
