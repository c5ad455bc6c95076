package sandbox_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/eryx-dev/eryx/internal/check"
	"github.com/eryx-dev/eryx/runtime/sandbox"
)

const recursion = "import sys\nsys.setrecursionlimit(10**7)\ndef f(n):\n    return f(n + 1)\nf(0)"

// Hostile code gets a clear outcome, and the engine keeps serving others.
func TestHostileCode(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		code   string
		status []sandbox.Status
		limits sandbox.Limits
	}{
		// Python 3.11 keeps Python frames off the C stack: unbounded
		// recursion ends in MemoryError, and reporting its 10**5 and more
		// frames stays cheap (the report shows the innermost 1,000).
		{"unbounded recursion", recursion, []sandbox.Status{sandbox.StatusError}, sandbox.Limits{MemoryBytes: 40 << 20}},
		{"unbounded recursion, default memory", recursion, []sandbox.Status{sandbox.StatusError}, sandbox.Limits{}},
		{"deeply nested literal", "eval('[' * 200000 + ']' * 200000)", []sandbox.Status{sandbox.StatusError, sandbox.StatusCrashed}, sandbox.Limits{}},
		{"deeply nested json", "import json\njson.loads('[' * 10**6)", []sandbox.Status{sandbox.StatusError, sandbox.StatusCrashed}, sandbox.Limits{}},
		{"huge urandom", "import os\nos.urandom(10**9)", []sandbox.Status{sandbox.StatusError}, sandbox.Limits{}},
		{"huge int to str", "str(10**100000)", []sandbox.Status{sandbox.StatusError}, sandbox.Limits{}},
		{"fork bomb attempt", "import os\nos.fork()", []sandbox.Status{sandbox.StatusError}, sandbox.Limits{}},
		{"replace stdout", "import sys\nsys.stdout = None\nprint('x')", []sandbox.Status{sandbox.StatusOK, sandbox.StatusError}, sandbox.Limits{}},
		{"close stdout fd", "import os\nos.close(1)\nprint('x')", []sandbox.Status{sandbox.StatusOK, sandbox.StatusError}, sandbox.Limits{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), check.Bound)
			defer cancel()
			res, err := engine.Execute(ctx, tt.code, sandbox.ExecOptions{Limits: tt.limits})
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
			if tt.code == recursion && (res.Error == nil || res.Error.Type != "MemoryError" ||
				!strings.Contains(res.Error.Traceback, "earlier frames not shown")) {
				t.Fatalf("recursion ended with %+v, want a MemoryError with a shortened traceback", res.Error)
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
