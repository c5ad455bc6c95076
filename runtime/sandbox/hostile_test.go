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
	// One outcome each, the one native CPython 3.11 gives where it has
	// one (checked with /usr/bin/python3.11): errType is the exception.
	tests := []struct {
		name    string
		code    string
		status  sandbox.Status
		errType string
		stdout  string
		limits  sandbox.Limits
	}{
		// Python 3.11 keeps Python frames off the C stack: unbounded
		// recursion ends in MemoryError, and reporting its 10**5 and more
		// frames stays cheap (the report shows the innermost 1,000).
		{"unbounded recursion", recursion, sandbox.StatusError, "MemoryError", "", sandbox.Limits{MemoryBytes: 40 << 20}},
		{"unbounded recursion, default memory", recursion, sandbox.StatusError, "MemoryError", "", sandbox.Limits{}},
		// Natively "SyntaxError: too many nested parentheses" (the
		// tokenizer's 200 levels); the wasm build's parser stack is
		// smaller and overflows first, which 3.11 reports as MemoryError.
		{"deeply nested literal", "eval('[' * 200000 + ']' * 200000)", sandbox.StatusError, "MemoryError", "", sandbox.Limits{}},
		{"deeply nested json", "import json\njson.loads('[' * 10**6)", sandbox.StatusError, "RecursionError", "", sandbox.Limits{}},
		{"huge urandom", "import os\nos.urandom(10**9)", sandbox.StatusError, "MemoryError", "", sandbox.Limits{}},
		{"huge int to str", "str(10**100000)", sandbox.StatusError, "ValueError", "", sandbox.Limits{}},
		{"fork bomb attempt", "import os\nos.fork()", sandbox.StatusError, "AttributeError", "", sandbox.Limits{}},
		// Natively: exit status 0, nothing printed (print to None is a no-op).
		{"replace stdout", "import sys\nsys.stdout = None\nprint('x')", sandbox.StatusOK, "", "", sandbox.Limits{}},
		// Natively: OSError [Errno 9] Bad file descriptor.
		{"close stdout fd", "import os\nos.close(1)\nprint('x')", sandbox.StatusError, "OSError", "", sandbox.Limits{}},
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
			if res.Status != tt.status || res.Stdout != tt.stdout {
				t.Fatalf("status %s stdout %q (err %v, error %+v), want %s %q", res.Status, res.Stdout, err, res.Error, tt.status, tt.stdout)
			}
			if got := ""; tt.errType != "" || res.Error != nil {
				if res.Error != nil {
					got = res.Error.Type
				}
				if got != tt.errType {
					t.Fatalf("error %+v, want a %s", res.Error, tt.errType)
				}
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
