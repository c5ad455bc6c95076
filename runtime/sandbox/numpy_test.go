package sandbox_test

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eryx-dev/eryx/internal/check"
	"github.com/eryx-dev/eryx/runtime/assets"
	"github.com/eryx-dev/eryx/runtime/sandbox"
)

// numpyEngine is built once, on first use, by the tests that need the numpy
// image; the package's other tests use the minimal image.
var numpyEngine = sync.OnceValues(func() (*sandbox.Engine, error) {
	return sandbox.NewEngine(context.Background(), sandbox.Config{Image: assets.ImageNumpy})
})

// npEngine returns the numpy image's engine. Without the image (a build
// with ERYX_NUMPY=0) the test skips, except in CI, where it fails.
func npEngine(t testing.TB) *sandbox.Engine {
	t.Helper()
	e, err := numpyEngine()
	if errors.Is(err, assets.ErrNotBuilt) {
		check.Needs(t, err, "the numpy runtime image (make runtime with ERYX_NUMPY=1)")
	}
	if err != nil {
		t.Fatalf("numpy image: %v", err)
	}
	return e
}

func runNP(t *testing.T, code string, opts sandbox.ExecOptions) *sandbox.Result {
	t.Helper()
	res, err := npEngine(t).Execute(context.Background(), code, opts)
	if err != nil {
		t.Fatalf("Execute(%q): %v", code, err)
	}
	return res
}

func TestNumpyWorks(t *testing.T) {
	t.Parallel()
	tests := []struct{ name, code, stdout string }{
		{"version", "import numpy as np\nprint(np.__version__)", "1.24.2\n"},
		{"sizes are wasm32's", "import numpy as np\nprint(np.dtype(np.intp).itemsize, np.dtype(np.int_).itemsize, np.dtype(np.longdouble).itemsize)",
			"4 4 16\n"},
		{"core", "import numpy as np\na = np.arange(12).reshape(3, 4)\nprint(a.sum(), a.T.shape, (a @ a.T)[2, 2], np.sin(np.pi / 2))",
			"66 (4, 3) 366 1.0\n"},
		{"linalg", "import numpy as np\nx = np.linalg.solve([[3, 1], [1, 2]], [9, 8])\nprint(x.round(6).tolist(), round(np.linalg.det([[1, 2], [3, 4]]), 6))",
			"[2.0, 3.0] -2.0\n"},
		{"fft", "import numpy as np\nprint(np.fft.fft([1, 0, 0, 0]).real.tolist())", "[1.0, 1.0, 1.0, 1.0]\n"},
		{"random generator", "import numpy as np\nprint(np.random.default_rng(42).integers(0, 100, 3).tolist())", "[8, 77, 65]\n"},
		// The legacy generator (mtrand, its own copy of the distributions)
		// draws what Debian's numpy draws natively for the same seed.
		{"random legacy", "import numpy as np\nnp.random.seed(1)\nprint(np.random.randint(0, 100, 3).tolist(), np.random.binomial(10, 0.5, 3).tolist())\n" +
			"np.random.seed(3)\nprint(np.random.poisson(5, 5).tolist(), np.random.negative_binomial(3, 0.4, 4).tolist(), np.random.geometric(0.3, 4).tolist()," +
			" np.random.zipf(2.5, 4).tolist(), np.random.hypergeometric(10, 5, 6, 4).tolist(), np.random.multinomial(20, [0.2, 0.3, 0.5]).tolist())",
			"[37, 12, 72] [0, 4, 3]\n[6, 2, 3, 3, 5] [12, 5, 1, 0] [2, 2, 4, 4] [2, 1, 1, 1] [4, 5, 5, 2] [5, 5, 10]\n"},
		// long double is IEEE binary128 on wasm32 (x86's is 80-bit): 34 digits.
		{"float128 repr", "import numpy as np\nprint(repr(np.longdouble(1) / 3), np.finfo(np.longdouble).nmant)", "0.3333333333333333333333333333333333 112\n"},
		{"module names", "import numpy.core._multiarray_umath as m, numpy.random.mtrand as r\nprint(m.__name__, r.__name__)",
			"numpy.core._multiarray_umath numpy.random.mtrand\n"},
		{"pickle", "import pickle, numpy as np\na = np.arange(5.0)\nprint(pickle.loads(pickle.dumps(a)).tolist())", "[0.0, 1.0, 2.0, 3.0, 4.0]\n"},
		{"submodules", "import numpy.ma, numpy.polynomial, numpy.lib.recfunctions, numpy.matlib\nprint('ok')", "ok\n"},
		{"sort", "import numpy as np\nprint(np.sort(np.array([3, 1, 2]), kind='stable').tolist(), np.argsort([3.0, 1.0, 2.0]).tolist())",
			"[1, 2, 3] [1, 2, 0]\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			res := runNP(t, tt.code, sandbox.ExecOptions{})
			if res.Status != sandbox.StatusOK || res.Stdout != tt.stdout {
				t.Fatalf("status %s, stdout %q, want %q (error %+v, stderr %s)", res.Status, res.Stdout, tt.stdout, res.Error, res.Stderr)
			}
		})
	}
}

// A part of numpy that is not in the image is an ImportError naming it.
func TestNumpyLeftOutSubmodule(t *testing.T) {
	t.Parallel()
	for _, mod := range []string{"numpy.distutils", "numpy.f2py", "numpy.core._simd"} {
		t.Run(mod, func(t *testing.T) {
			t.Parallel()
			res := runNP(t, "import "+mod, sandbox.ExecOptions{})
			if res.Status != sandbox.StatusError || res.Error.Type != "ModuleNotFoundError" ||
				!strings.Contains(res.Error.Message, mod) || !strings.Contains(res.Error.Message, "is left out") {
				t.Fatalf("status %s, error %+v", res.Status, res.Error)
			}
		})
	}
}

// The minimal image has no numpy at all, and says so the usual way.
func TestMinimalImageHasNoNumpy(t *testing.T) {
	t.Parallel()
	res := run(t, "import numpy", sandbox.ExecOptions{})
	if res.Status != sandbox.StatusError || res.Error.Type != "ModuleNotFoundError" || !strings.Contains(res.Error.Message, "numpy") {
		t.Fatalf("status %s, error %+v", res.Status, res.Error)
	}
}

func TestNumpyMemoryLimit(t *testing.T) {
	t.Parallel()
	for _, code := range []string{
		"import numpy as np\nnp.zeros((10**5, 10**5))",
		"import numpy as np\nnp.ones((10**5, 10**5))",
		"import numpy as np\nnp.ones(200 * 1024 * 1024 // 8)", // fits wasm32, not the 128 MiB limit
		"import numpy as np\nnp.random.default_rng().random((6000, 6000))",
		"import numpy as np\na = np.ones(1 << 20)\nwhile True:\n    a = np.concatenate([a, a])",
	} {
		t.Run(code[strings.IndexByte(code, '\n')+1:], func(t *testing.T) {
			t.Parallel()
			res := runNP(t, code, sandbox.ExecOptions{})
			// 10**10 elements do not fit wasm32's address space at all:
			// numpy says so with a ValueError, as on any 32-bit platform.
			tooBig := res.Error != nil && res.Error.Type == "ValueError" && strings.Contains(res.Error.Message, "array is too big")
			if res.Status != sandbox.StatusError || !tooBig && res.Error.Type != "numpy.core._exceptions._ArrayMemoryError" && res.Error.Type != "MemoryError" {
				t.Fatalf("status %s, error %+v", res.Status, res.Error)
			}
			if res.Stats.PeakMemoryBytes > sandbox.DefaultMemoryBytes {
				t.Fatalf("peak memory %d over the limit", res.Stats.PeakMemoryBytes)
			}
		})
	}
	// The sandbox goes on working after the MemoryError.
	sb := newSandbox(t, npEngine(t))
	for _, code := range []string{"import numpy as np\nnp.ones((10**5, 10**5))", "import numpy as np\nprint(np.ones(1000).sum())"} {
		res, err := sb.Execute(context.Background(), code, sandbox.ExecOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(code, "print") && (res.Status != sandbox.StatusOK || res.Stdout != "1000.0\n") {
			t.Fatalf("after MemoryError: %s %q %+v", res.Status, res.Stdout, res.Error)
		}
	}
}

// Single numpy calls that run for many seconds inside C loops (sorting,
// lapack_lite's f2c LAPACK, numpy's own matmul loops without BLAS): the
// preemption rewrite covers numpy's code too. The sandbox gets 1 GiB so
// that the arrays are big enough to keep a fast machine busy; a huge
// array numpy cannot allocate would make linalg return NaNs at once.
var longNumpyCalls = []struct{ name, code string }{
	{"sort", "a = np.arange(40_000_000, 0, -1, dtype=np.float64)\nprint('go', flush=True)\na.sort(kind='heapsort')"},
	{"svd", "a = np.random.default_rng(1).random((1500, 1500))\nprint('go', flush=True)\nnp.linalg.svd(a)"},
	{"inv", "a = np.random.default_rng(1).random((2000, 2000))\nprint('go', flush=True)\nnp.linalg.inv(a)"},
	{"matmul", "a = np.ones((3000, 3000))\nprint('go', flush=True)\na @ a"},
}

func bigNumpySandbox(t *testing.T) *sandbox.Sandbox {
	t.Helper()
	sb, err := npEngine(t).NewSandbox(context.Background(), sandbox.Limits{MemoryBytes: 1 << 30})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sb.Close(context.Background()) })
	return sb
}

func TestNumpyTimeoutStopsCLoops(t *testing.T) {
	t.Parallel()
	for _, tt := range longNumpyCalls {
		t.Run(tt.name, func(t *testing.T) {
			res, err := bigNumpySandbox(t).Execute(context.Background(), "import numpy as np\n"+tt.code,
				sandbox.ExecOptions{Limits: sandbox.Limits{Timeout: 2 * time.Second}})
			if !errors.Is(err, sandbox.ErrTimeout) || res.Status != sandbox.StatusTimeout || res.Stdout != "go\n" {
				t.Fatalf("err = %v, status %v, stdout %q, error %+v", err, res.Status, res.Stdout, res.Error)
			}
		})
	}
}

func TestNumpyCancelStopsCLoops(t *testing.T) {
	t.Parallel()
	for _, tt := range longNumpyCalls {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			var once sync.Once
			stop := time.AfterFunc(check.Bound, func() { t.Error("still running long after the cancel") })
			defer stop.Stop()
			res, err := bigNumpySandbox(t).Execute(ctx, "import numpy as np\n"+tt.code, sandbox.ExecOptions{
				OnOutput: func(sandbox.Stream, []byte) { once.Do(cancel) },
			})
			if !errors.Is(err, sandbox.ErrCancelled) || res.Status != sandbox.StatusCancelled || res.Stdout != "go\n" {
				t.Fatalf("err = %v, status %v, stdout %q, error %+v", err, res.Status, res.Stdout, res.Error)
			}
		})
	}
}

// Every sandbox starts from one memory image; numpy's global random state
// and fresh generators must still differ between sandboxes.
func TestNumpyRandomDiffersPerSandbox(t *testing.T) {
	t.Parallel()
	code := "import numpy as np\nprint(np.random.randint(0, 2**31, 4).tolist(), np.random.default_rng().integers(0, 2**31, 4).tolist()," +
		" np.random.random())"
	seen := map[string]bool{}
	for range 4 {
		res := runNP(t, code, sandbox.ExecOptions{})
		if res.Status != sandbox.StatusOK {
			t.Fatalf("%s %+v", res.Status, res.Error)
		}
		for _, part := range strings.SplitAfter(res.Stdout, "]") {
			if part = strings.TrimSpace(part); part == "" {
				continue
			}
			if seen[part] {
				t.Fatalf("two sandboxes drew the same numbers: %s", part)
			}
			seen[part] = true
		}
	}
	// An explicit seed is still honoured.
	a := runNP(t, "import numpy as np\nnp.random.seed(7)\nprint(np.random.random())", sandbox.ExecOptions{})
	b := runNP(t, "import numpy as np\nnp.random.seed(7)\nprint(np.random.random())", sandbox.ExecOptions{})
	if a.Stdout != b.Stdout || a.Stdout == "" {
		t.Fatalf("seeded draws differ: %q %q", a.Stdout, b.Stdout)
	}
}

// Arrays in a session survive its snapshot and come back in a sandbox of
// another engine (another worker).
func TestNumpyArraysSurviveSnapshot(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	a := newSandbox(t, npEngine(t))
	session(t, a, "import numpy as np\nm = np.arange(6, dtype=np.float32).reshape(2, 3)\n"+
		"rec = np.array([(1, 'x')], dtype=[('n', 'i8'), ('s', 'U3')])\nrng = np.random.default_rng(5)\nmasked = np.ma.masked_array([1, 2], mask=[0, 1])")
	snap, err := a.SnapshotState(ctx, 0)
	if err != nil || len(snap.Skipped) != 0 {
		t.Fatalf("snapshot: %v, skipped %+v", err, snap)
	}
	want := session(t, a, "print(rng.integers(0, 1000, 3).tolist())").Stdout

	other, err := sandbox.NewEngine(ctx, sandbox.Config{Image: assets.ImageNumpy})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = other.Close(ctx) }()
	b := newSandbox(t, other)
	if skipped, err := b.RestoreState(ctx, snap.Data); err != nil || len(skipped) != 0 {
		t.Fatalf("restore: %v, skipped %+v", err, skipped)
	}
	res := session(t, b, "print(m.dtype, m.shape, m.sum(), rec['s'][0], masked.sum())\nprint(rng.integers(0, 1000, 3).tolist())")
	if res.Stdout != "float32 (2, 3) 15.0 x 1\n"+want {
		t.Fatalf("stdout %q, want the arrays and %q", res.Stdout, want)
	}
}

// `result` set to an array is not JSON: the job says so and how to fix it;
// converted, it is returned.
func TestNumpyResult(t *testing.T) {
	t.Parallel()
	res := runNP(t, "import numpy as np\nresult = np.arange(3)", sandbox.ExecOptions{})
	if res.Status != sandbox.StatusOK || len(res.Value) != 0 ||
		!strings.Contains(res.ValueError, "ndarray") || !strings.Contains(res.ValueError, ".tolist()") {
		t.Fatalf("status %s value %s result_error %q", res.Status, res.Value, res.ValueError)
	}
	res = runNP(t, "import numpy as np\nresult = {'mean': float(np.mean([1, 2, 3])), 'v': np.arange(3).tolist()}", sandbox.ExecOptions{})
	if string(res.Value) != `{"mean":2.0,"v":[0,1,2]}` {
		t.Fatalf("value %s, result_error %q", res.Value, res.ValueError)
	}
}

// The example job runs as shipped and finds the line and the outliers.
func TestNumpyExampleJob(t *testing.T) {
	t.Parallel()
	src, err := os.ReadFile("../../examples/jobs/numpy_stats.py")
	if err != nil {
		t.Fatal(err)
	}
	res := runNP(t, string(src), sandbox.ExecOptions{})
	if res.Status != sandbox.StatusOK || res.ValueError != "" {
		t.Fatalf("%s %+v %s", res.Status, res.Error, res.ValueError)
	}
	var v struct {
		Slope, Intercept float64
		Outliers         int
	}
	if err := json.Unmarshal(res.Value, &v); err != nil {
		t.Fatal(err)
	}
	if v.Slope < 2.9 || v.Slope > 3.3 || v.Outliers < 8 || v.Outliers > 14 {
		t.Fatalf("result %s\n%s", res.Value, res.Stdout)
	}
}

// np.save and np.load work on files in /tmp (WASI has no dup(), which
// numpy's own fast path for real files needs).
func TestNumpySaveLoad(t *testing.T) {
	t.Parallel()
	res := runNP(t, "import numpy as np\na = np.arange(12.0).reshape(3, 4)\nnp.save('/tmp/a.npy', a)\nnp.savez_compressed('/tmp/b.npz', a=a, b=a.T)\n"+
		"print(np.load('/tmp/a.npy').sum(), np.load('/tmp/b.npz')['b'].shape)\nnp.savetxt('/tmp/a.txt', a)\nprint(np.loadtxt('/tmp/a.txt').shape)", sandbox.ExecOptions{})
	if res.Status != sandbox.StatusOK || res.Stdout != "66.0 (4, 3)\n(3, 4)\n" {
		t.Fatalf("%s %q %+v", res.Status, res.Stdout, res.Error)
	}
}
