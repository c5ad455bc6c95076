package sandbox_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eryx-dev/eryx/runtime/sandbox"
)

func needSlotReset(t *testing.T) {
	t.Helper()
	if !engine.SlotReset() {
		t.Skipf("in-place resets unavailable here: %s", engine.Stats().SlotResetFallback)
	}
}

func newMarker(t *testing.T) string {
	t.Helper()
	b := make([]byte, 12)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return "MRK" + hex.EncodeToString(b)
}

// leaveTraces is job A: it puts the marker everywhere a job can put
// something, leaves a file open, then ends with tail.
func leaveTraces(marker, tail string) string {
	return fmt.Sprintf(`import builtins, json, random, os, sys, decimal
M = %q
big = bytearray(M.encode() * (4 * 2**20 // len(M)))    # 4 MiB of markers, above the image
g_marker = M
json.eryx_marker = M                  # a module attribute
json.JSONDecoder.eryx_marker = M      # a class attribute of a stdlib type
decimal.getcontext().prec = 77        # state of a C module
builtins.eryx_marker = M
sys.modules['eryx_marker_mod'] = type(sys)(M)
os.environ['ERYX_MARKER'] = M
random.seed(M)
with open('/tmp/' + M, 'w') as f:
    f.write(M * 1000)
os.mkdir('/tmp/dir-' + M)
kept = open('/tmp/kept', 'w')         # left open
kept.write(M)
kept.flush()
os.makedirs('/output/o', exist_ok=True)
open('/output/o/' + M, 'w').write(M)
print(M)
%s
`, marker, tail)
}

// probeTraces is job B: it reports everything of A it can find, and what
// it sees of its environment; run on a new sandbox it prints the baseline.
const probeTraces = `import builtins, json, random, os, sys, decimal
found = []
for name, ok in [
    ('global', 'g_marker' in globals() or 'big' in globals()),
    ('module attribute', hasattr(json, 'eryx_marker')),
    ('class attribute', hasattr(json.JSONDecoder, 'eryx_marker')),
    ('builtins', hasattr(builtins, 'eryx_marker')),
    ('sys.modules', 'eryx_marker_mod' in sys.modules),
    ('environ', 'ERYX_MARKER' in os.environ),
    ('decimal', decimal.getcontext().prec != 28),
]:
    if ok:
        found.append(name)
fds = []
for fd in range(3, 200):
    try:
        os.fstat(fd)
    except OSError:
        continue
    fds.append(fd)
    try:
        data = os.read(fd, 1 << 16)
        if b'MRK' in data:
            found.append('fd %d' % fd)
    except OSError:
        pass
print('found', found)
print('tmp', sorted(os.listdir('/tmp')), 'output', sorted(os.listdir('/output')))
print('fds', fds)
print('modules', len(sys.modules))
print('random', random.random() != random.Random(random.getstate()[1][0]).random())
`

func TestResetLeavesNothingOfThePreviousJob(t *testing.T) {
	needSlotReset(t)
	ctx := context.Background()
	baseline := func() string {
		res, err := engine.Execute(ctx, probeTraces, sandbox.ExecOptions{})
		if err != nil || res.Status != sandbox.StatusOK {
			t.Fatalf("baseline: %v %+v", err, res)
		}
		return res.Stdout
	}()
	if !strings.HasPrefix(baseline, "found []\n") {
		t.Fatalf("a new sandbox finds traces: %s", baseline)
	}
	image := engine.ImageForTest()
	tests := []struct {
		name   string
		tail   string
		limits sandbox.Limits
		cancel bool // cancel once the marker is printed
		status sandbox.Status
	}{
		{name: "normal end", status: sandbox.StatusOK},
		{name: "exception", tail: "raise ValueError(M)", status: sandbox.StatusError},
		{name: "sys.exit", tail: "sys.exit(3)", status: sandbox.StatusExit},
		{name: "timeout (soft stop)", tail: "while True:\n    pass", limits: sandbox.Limits{Timeout: 300 * time.Millisecond}, status: sandbox.StatusTimeout},
		{name: "cancellation", tail: "while True:\n    pass", cancel: true, status: sandbox.StatusCancelled},
		{name: "MemoryError", tail: "more = [bytearray(2**20) for _ in range(1000)]", limits: sandbox.Limits{MemoryBytes: 64 << 20}, status: sandbox.StatusError},
		{name: "session", status: sandbox.StatusOK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			sb, err := engine.NewSandbox(ctx, sandbox.Limits{})
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = sb.Close(ctx) }()
			globals, table := sb.GlobalsForTest(), sb.TableForTest()
			marker := newMarker(t)
			jctx, cancel := context.WithCancel(ctx)
			defer cancel()
			var once sync.Once
			opts := sandbox.ExecOptions{Limits: tt.limits, Session: tt.name == "session"}
			if tt.cancel {
				opts.OnOutput = func(_ sandbox.Stream, b []byte) {
					if bytes.Contains(b, []byte(marker)) {
						once.Do(cancel)
					}
				}
			}
			res, _ := sb.Execute(jctx, leaveTraces(marker, tt.tail), opts)
			if res == nil || res.Status != tt.status || !strings.Contains(res.Stdout, marker) {
				t.Fatalf("job A: %+v, want status %s", res, tt.status)
			}
			if len(res.OutputFiles) != 1 {
				t.Fatalf("job A's output files: %+v", res.OutputFiles)
			}
			if err := sb.Reset(ctx); err != nil {
				t.Fatal(err)
			}

			// The Go side: B's whole linear memory, globals and table.
			mem := sb.MemoryForTest()
			if i := bytes.Index(mem, []byte(marker[:12])); i >= 0 {
				t.Fatalf("marker at %#x of linear memory after reset", i)
			}
			if len(mem) != len(image) {
				t.Fatalf("memory is %d bytes after reset, the image %d", len(mem), len(image))
			}
			if !bytes.Equal(mem, image) {
				t.Fatalf("memory differs from the image at page %d", firstDiffPage(mem, image))
			}
			if got := sb.GlobalsForTest(); fmt.Sprint(got) != fmt.Sprint(globals) {
				t.Fatalf("globals %v after reset, %v when new", got, globals)
			}
			if got := sb.TableForTest(); fmt.Sprint(got) != fmt.Sprint(table) {
				t.Fatal("function table changed")
			}

			// The Python side.
			res, err = sb.Execute(ctx, probeTraces, sandbox.ExecOptions{Session: tt.name == "session"})
			if err != nil || res.Status != sandbox.StatusOK {
				t.Fatalf("job B: %v %+v", err, res)
			}
			if res.Stdout != baseline {
				t.Fatalf("job B on the reset sandbox sees\n%s\non a new one\n%s", res.Stdout, baseline)
			}
			if len(res.OutputFiles) != 0 {
				t.Fatalf("job B collected A's output files: %+v", res.OutputFiles)
			}
		})
	}
}

func firstDiffPage(a, b []byte) int {
	for i := 0; i < min(len(a), len(b)); i += 4096 {
		if !bytes.Equal(a[i:min(i+4096, len(a))], b[i:min(i+4096, len(b))]) {
			return i / 4096
		}
	}
	return min(len(a), len(b)) / 4096
}

// Random short programs on one slot: after every reset its memory is the
// image, page for page.
func TestResetFuzzMatchesImage(t *testing.T) {
	needSlotReset(t)
	t.Parallel()
	ctx := context.Background()
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := mrand.New(mrand.NewPCG(seed, 1))
	snippets := []func() string{
		func() string { return fmt.Sprintf("x = bytearray(%d)", rng.IntN(40<<20)) },
		func() string { return fmt.Sprintf("d = {str(i): i for i in range(%d)}", rng.IntN(50000)) },
		func() string { return fmt.Sprintf("s = 'y' * %d", rng.IntN(1<<22)) },
		func() string {
			return fmt.Sprintf("open('/tmp/f%d', 'wb').write(b'z' * %d)", rng.IntN(5), rng.IntN(1<<20))
		},
		func() string { return "import random\nr = [random.random() for _ in range(1000)]" },
		func() string { return "raise KeyError('k')" },
		func() string { return fmt.Sprintf("def f(n):\n    return n and f(n - 1)\nf(%d)", rng.IntN(500)) },
		func() string {
			mods := []string{"csv", "sqlite3", "zlib", "fractions", "statistics", "textwrap", "heapq", "uuid"}
			return "import " + mods[rng.IntN(len(mods))]
		},
		func() string { return "import gc\ngc.collect()" },
		func() string { return "import sys\nsys.setrecursionlimit(500)" },
		func() string { return "fh = open('/tmp/held', 'w')" },
		func() string { return "del x" },
		func() string { return "import os\nos.urandom(4096)" },
	}
	image := engine.ImageForTest()
	sb, err := engine.NewSandbox(ctx, sandbox.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sb.Close(ctx) }()
	for round := range 40 {
		var prog []string
		for range 1 + rng.IntN(4) {
			prog = append(prog, "try:\n    "+strings.ReplaceAll(snippets[rng.IntN(len(snippets))](), "\n", "\n    ")+"\nexcept Exception:\n    pass")
		}
		code := strings.Join(prog, "\n")
		res, err := sb.Execute(ctx, code, sandbox.ExecOptions{})
		if err != nil {
			t.Fatalf("round %d: %v\n%s", round, err, code)
		}
		if !sb.Reusable() {
			// The memory limit: a pool would retire this slot; Reset still
			// has to be complete.
			t.Logf("round %d hit the memory limit (%s)", round, res.Status)
		}
		if err := sb.Reset(ctx); err != nil {
			t.Fatalf("round %d: reset: %v", round, err)
		}
		if mem := sb.MemoryForTest(); !bytes.Equal(mem, image) {
			t.Fatalf("round %d: memory (%d bytes) differs from the image (%d) at page %d\n%s",
				round, len(mem), len(image), firstDiffPage(mem, image), code)
		}
	}
	resets, restored, zeroed, dropped := sb.ResetStatsForTest()
	t.Logf("%d resets: %d image pages restored, %d zeroed, %d dropped", resets, restored, zeroed, dropped)
}

// What cannot be put back ends the sandbox: the reset fails, says why, and
// closes it.
func TestResetRefusesWhatItCannotUndo(t *testing.T) {
	needSlotReset(t)
	t.Parallel()
	ctx := context.Background()
	for _, tt := range []struct{ name, code string }{
		{"closed preopen", "import os\nfor fd in range(3, 9):\n    try:\n        os.close(fd)\n    except OSError:\n        pass"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			sb, err := engine.NewSandbox(ctx, sandbox.Limits{})
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = sb.Close(ctx) }()
			if res, err := sb.Execute(ctx, tt.code, sandbox.ExecOptions{}); err != nil {
				t.Fatalf("%v %+v", err, res)
			}
			err = sb.Reset(ctx)
			if !errors.Is(err, sandbox.ErrResetFailed) {
				t.Fatalf("reset: %v, want ErrResetFailed", err)
			}
			t.Log(err)
			if sb.Reusable() {
				t.Fatal("a sandbox whose reset failed is still usable")
			}
			if _, err := sb.Execute(ctx, "pass", sandbox.ExecOptions{}); !errors.Is(err, sandbox.ErrSandboxClosed) {
				t.Fatalf("after a failed reset: %v", err)
			}
		})
	}
}

// The memory limit and a hard stop make a sandbox unfit for reuse.
func TestSpentSandboxesAreNotReusable(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	for _, tt := range []struct {
		name, code string
		limits     sandbox.Limits
	}{
		{"memory limit", "x = bytearray(100 * 2**20)", sandbox.Limits{MemoryBytes: 64 << 20}},
		{"hard stop", "sum(range(10**15))", sandbox.Limits{Timeout: 200 * time.Millisecond}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			sb, err := engine.NewSandbox(ctx, sandbox.Limits{})
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = sb.Close(ctx) }()
			if !sb.Reusable() {
				t.Fatal("a new sandbox is not reusable")
			}
			_, _ = sb.Execute(ctx, tt.code, sandbox.ExecOptions{Limits: tt.limits})
			if sb.Reusable() {
				t.Fatal("still reusable")
			}
		})
	}
}

// The fallback: without in-place resets the engine says so and why, and
// Reset still returns a sandbox to the image (by mapping it afresh).
func TestNoSlotResetFallsBackToRebuild(t *testing.T) {
	ctx := context.Background()
	e, err := sandbox.NewEngine(ctx, sandbox.Config{NoSlotReset: true})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = e.Close(ctx) }()
	st := e.Stats()
	if e.SlotReset() || st.SlotReset != sandbox.SlotResetRebuild || st.SlotResetFallback == "" {
		t.Fatalf("stats %+v", st)
	}
	sb, err := e.NewSandbox(ctx, sandbox.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sb.Close(ctx) }()
	marker := newMarker(t)
	if res, err := sb.Execute(ctx, leaveTraces(marker, ""), sandbox.ExecOptions{}); err != nil || res.Status != sandbox.StatusOK {
		t.Fatalf("%v %+v", err, res)
	}
	if err := sb.Reset(ctx); err != nil {
		t.Fatal(err)
	}
	if mem, image := sb.MemoryForTest(), e.ImageForTest(); !bytes.Equal(mem, image) {
		t.Fatalf("memory differs from the image at page %d", firstDiffPage(mem, image))
	}
	res, err := sb.Execute(ctx, probeTraces, sandbox.ExecOptions{})
	if err != nil || !strings.HasPrefix(res.Stdout, "found []\n") {
		t.Fatalf("%v %+v", err, res)
	}
}
