package sandbox_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/eryx-dev/eryx/runtime/sandbox"
)

// Hostile code gets a clear outcome, and the engine keeps serving others.
func TestHostileCode(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		code   string
		status []sandbox.Status
	}{
		{"C stack overflow", "import sys\nsys.setrecursionlimit(10**7)\ndef f(n):\n    return f(n + 1)\nf(0)",
			[]sandbox.Status{sandbox.StatusCrashed, sandbox.StatusError}},
		{"deeply nested literal", "eval('[' * 200000 + ']' * 200000)", []sandbox.Status{sandbox.StatusError, sandbox.StatusCrashed}},
		{"deeply nested json", "import json\njson.loads('[' * 10**6)", []sandbox.Status{sandbox.StatusError, sandbox.StatusCrashed}},
		{"huge urandom", "import os\nos.urandom(10**9)", []sandbox.Status{sandbox.StatusError}},
		{"huge int to str", "str(10**100000)", []sandbox.Status{sandbox.StatusError}},
		{"fork bomb attempt", "import os\nos.fork()", []sandbox.Status{sandbox.StatusError}},
		{"replace stdout", "import sys\nsys.stdout = None\nprint('x')", []sandbox.Status{sandbox.StatusOK, sandbox.StatusError}},
		{"close stdout fd", "import os\nos.close(1)\nprint('x')", []sandbox.Status{sandbox.StatusOK, sandbox.StatusError}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			res, err := engine.Execute(ctx, tt.code, sandbox.ExecOptions{})
			if res == nil {
				t.Fatalf("no result: %v", err)
			}
			ok := false
			for _, s := range tt.status {
				ok = ok || res.Status == s
			}
			if !ok {
				t.Fatalf("status %s (err %v, error %+v), want one of %v", res.Status, err, res.Error, tt.status)
			}
			if res.Status == sandbox.StatusCrashed && !errors.Is(err, sandbox.ErrGuestCrashed) {
				t.Fatalf("crashed without ErrGuestCrashed: %v", err)
			}
			t.Logf("%s: %v %+v", res.Status, err, res.Error)
			// The engine is unaffected.
			after := run(t, "print('fine')", sandbox.ExecOptions{})
			if after.Stdout != "fine\n" {
				t.Fatalf("engine broken after %s: %+v", tt.name, after)
			}
		})
	}
}
