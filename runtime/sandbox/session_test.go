package sandbox_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/eryx-dev/eryx/runtime/sandbox"
)

func newSandbox(t *testing.T, e *sandbox.Engine) *sandbox.Sandbox {
	t.Helper()
	sb, err := e.NewSandbox(context.Background(), sandbox.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sb.Close(context.Background()) })
	return sb
}

func session(t *testing.T, sb *sandbox.Sandbox, code string) *sandbox.Result {
	t.Helper()
	res, err := sb.Execute(context.Background(), code, sandbox.ExecOptions{Session: true})
	if err != nil {
		t.Fatalf("%q: %v", code, err)
	}
	if res.Status != sandbox.StatusOK {
		t.Fatalf("%q: %s %+v", code, res.Status, res.Error)
	}
	return res
}

const sessionSetup = `
import json, collections
from dataclasses import dataclass

counter = 41
names = ['a', 'b']
table = collections.Counter('hello')

def double(x):
    return x * 2

@dataclass
class Point:
    x: int
    y: int

    def norm1(self):
        return abs(self.x) + abs(self.y)

p = Point(3, -4)
square = lambda v: v * v
gen = (i for i in range(3))
`

const sessionCheck = `print(counter + 1, names, table['l'], double(21), p.norm1(), square(5), json.dumps([1]))`

// The point of snapshots: state built on one worker continues on another.
func TestSnapshotRestoresInAnotherEngine(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	a := newSandbox(t, engine)
	session(t, a, sessionSetup)
	snap, err := a.SnapshotState(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(snap.Skipped) != 1 || snap.Skipped[0].Name != "gen" || !strings.Contains(snap.Skipped[0].Reason, "generator") {
		t.Fatalf("skipped %+v, want only the generator", snap.Skipped)
	}

	other, err := sandbox.NewEngine(ctx, sandbox.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = other.Close(ctx) }()
	b := newSandbox(t, other)
	skipped, err := b.RestoreState(ctx, snap.Data)
	if err != nil || len(skipped) != 0 {
		t.Fatalf("restore: %v, skipped %+v", err, skipped)
	}
	res := session(t, b, sessionCheck)
	if res.Stdout != "42 ['a', 'b'] 2 42 7 25 [1]\n" {
		t.Fatalf("stdout %q", res.Stdout)
	}
}

func TestClearAndReset(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	sb := newSandbox(t, engine)
	session(t, sb, "x = 1\nimport builtins\nbuiltins.marker = 'changed'\nopen('/tmp/f', 'w').write('x')")
	if err := sb.ClearState(ctx); err != nil {
		t.Fatal(err)
	}
	res := session(t, sb, "import builtins\nprint('x' in globals(), getattr(builtins, 'marker', None))")
	if res.Stdout != "False changed\n" {
		t.Fatalf("after clear: %q", res.Stdout)
	}
	if err := sb.Reset(ctx); err != nil {
		t.Fatal(err)
	}
	res = session(t, sb, "import builtins, os\nprint('x' in globals(), getattr(builtins, 'marker', None), os.listdir('/tmp'))")
	if res.Stdout != "False None []\n" {
		t.Fatalf("after reset: %q", res.Stdout)
	}
}

func TestSnapshotLimits(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	sb := newSandbox(t, engine)
	session(t, sb, "blob = 'x' * (2 * 1024 * 1024)")
	if _, err := sb.SnapshotState(ctx, 1<<20); !errors.Is(err, sandbox.ErrSnapshotTooLarge) {
		t.Fatalf("err = %v, want ErrSnapshotTooLarge", err)
	}
	if snap, err := sb.SnapshotState(ctx, 4<<20); err != nil || len(snap.Data) < 2<<20 {
		t.Fatalf("err = %v", err)
	}
	// The default cap is on.
	session(t, sb, "blob = 'x' * (11 * 1024 * 1024)")
	if _, err := sb.SnapshotState(ctx, 0); !errors.Is(err, sandbox.ErrSnapshotTooLarge) {
		t.Fatalf("err = %v, want ErrSnapshotTooLarge at the default cap", err)
	}
}

func TestRestoreRejectsGarbage(t *testing.T) {
	t.Parallel()
	sb := newSandbox(t, engine)
	for _, data := range [][]byte{[]byte("not a pickle"), {0x80, 0x04, 0x4b, 0x01, 0x2e}} {
		if _, err := sb.RestoreState(context.Background(), data); !errors.Is(err, sandbox.ErrSessionOp) {
			t.Fatalf("err = %v, want ErrSessionOp", err)
		}
	}
	// The sandbox is still usable.
	session(t, sb, "print('ok')")
}

// In a session `result` persists like any variable, but it is the output of
// the job that set it: a later job that does not set it reports no result,
// also when the job that set it raised, and also after a snapshot moved the
// session to another sandbox.
func TestSessionResultBelongsToItsJob(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	steps := []struct {
		code   string
		status sandbox.Status
		value  string // "" = no result reported
	}{
		{code: "result = 42", status: sandbox.StatusOK, value: "42"},
		{code: "print(1)", status: sandbox.StatusOK},
		{code: "print(result)", status: sandbox.StatusOK},            // still readable, not reported
		{code: "result = 42", status: sandbox.StatusOK, value: "42"}, // same (cached) int again
		{code: "result = result + 1", status: sandbox.StatusOK, value: "43"},
		{code: "result = 'boom'\nraise ValueError('x')", status: sandbox.StatusError, value: `"boom"`},
		{code: "x = 1", status: sandbox.StatusOK},
		{code: "raise KeyError('k')", status: sandbox.StatusError},
		{code: "def f():\n    global result\n    result = [1]\nf()", status: sandbox.StatusOK, value: "[1]"},
		{code: "globals()['result'] = {'a': 1}", status: sandbox.StatusOK, value: `{"a":1}`},
		{code: "class C:\n    result = 5\n", status: sandbox.StatusOK},
		{code: "del result", status: sandbox.StatusOK},
		{code: "print(2)", status: sandbox.StatusOK},
		{code: "result = 7", status: sandbox.StatusOK, value: "7"},
	}
	sb := newSandbox(t, engine)
	for i, st := range steps {
		res, err := sb.Execute(ctx, st.code, sandbox.ExecOptions{Session: true})
		if err != nil {
			t.Fatalf("step %d %q: %v", i, st.code, err)
		}
		if res.Status != st.status || string(res.Value) != st.value {
			t.Fatalf("step %d %q: status %s result %q (%+v), want %s %q", i, st.code, res.Status, res.Value, res.Error, st.status, st.value)
		}
	}
	// Restored elsewhere, the variable is there but belongs to no job yet.
	snap, err := sb.SnapshotState(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	other := newSandbox(t, engine)
	if _, err := other.RestoreState(ctx, snap.Data); err != nil {
		t.Fatal(err)
	}
	if res := session(t, other, "print(result)"); len(res.Value) != 0 || res.Stdout != "7\n" {
		t.Fatalf("after restore: result %q stdout %q, want none and 7", res.Value, res.Stdout)
	}
}
