package sandbox_test

import (
	"context"
	_ "embed"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/eryx-dev/eryx/internal/check"
	"github.com/eryx-dev/eryx/runtime/sandbox"
)

// numpy_suite.py runs numpy's own tests with pytest; the same file runs in
// the sandbox and natively (Debian's python3-numpy, the same release).
//
//go:embed testdata/numpy_suite.py
var numpySuite string

// numpyTestDir is where `make runtime` links numpy's tests and pytest.
const numpyTestDir = "../assets/numpytest"

// The fast selection `make test` runs; the full one is behind `make test-numpy`.
var (
	numpySuiteFast = []string{
		"numpy/fft/tests", "numpy/linalg/tests/test_regression.py", "numpy/random/tests/test_smoke.py",
		"numpy/core/tests/test_shape_base.py", "numpy/core/tests/test_indexing.py", "numpy/lib/tests/test_function_base.py",
	}
	numpySuiteFull = []string{"numpy/core/tests", "numpy/linalg/tests", "numpy/fft/tests", "numpy/random/tests", "numpy/lib/tests"}
)

type suiteCounts struct{ Passed, Failed, Skipped int }

type suiteReport struct {
	Exit     int                    `json:"exit"`
	Modules  map[string]suiteCounts `json:"modules"`
	Files    map[string]int         `json:"files"` // passed per test file
	Failures [][2]string            `json:"failures"`
}

func parseSuite(t *testing.T, out string) suiteReport {
	t.Helper()
	i := strings.LastIndex(out, "NUMPY-SUITE ")
	if i < 0 {
		t.Fatalf("no report in the output: ...%s", out[max(0, len(out)-3000):])
	}
	var r suiteReport
	line, _, _ := strings.Cut(out[i+len("NUMPY-SUITE "):], "\n")
	if err := json.Unmarshal([]byte(line), &r); err != nil {
		t.Fatalf("report %q: %v", line, err)
	}
	return r
}

func numpySuiteArgs(args []string) string {
	b, _ := json.Marshal(args)
	return string(b)
}

// numpyTestFiles expands a selection (directories and files under the
// tests tree) into test files.
func numpyTestFiles(t *testing.T, root string, args []string) []string {
	t.Helper()
	var files []string
	for _, a := range args {
		err := filepath.WalkDir(filepath.Join(root, a), func(p string, d os.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			if name := d.Name(); strings.HasPrefix(name, "test_") && strings.HasSuffix(name, ".py") {
				rel, err := filepath.Rel(root, p)
				files = append(files, filepath.ToSlash(rel))
				return err
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	sort.Strings(files)
	return files
}

// runNumpySuiteSandbox runs the selection inside sandboxes of the numpy
// image with numpy's tests and pytest mounted as packages: one fresh sandbox
// per test file, so that a file that crashes the interpreter costs only
// its own tests, and is reported.
func runNumpySuiteSandbox(t *testing.T, args []string) (suiteReport, []string) {
	t.Helper()
	testsDir, libsDir := filepath.Join(numpyTestDir, "tests"), filepath.Join(numpyTestDir, "pylibs")
	if _, err := os.Stat(testsDir); err != nil {
		check.Needs(t, err, "numpy's tests and pytest (make runtime with ERYX_NUMPY=1)")
		t.Fatal(err)
	}
	tests, err := sandbox.PackageFromFS("numpy-tests", os.DirFS(testsDir))
	if err != nil {
		t.Fatal(err)
	}
	pylibs, err := sandbox.PackageFromFS("pytest", os.DirFS(libsDir))
	if err != nil {
		t.Fatal(err)
	}
	total := suiteReport{Modules: map[string]suiteCounts{}, Files: map[string]int{}}
	var crashed []string
	lim := sandbox.Limits{Timeout: 20 * time.Minute, MemoryBytes: 1 << 30, TmpBytes: 64 << 20, OutputBytes: 8 << 20}
	for _, file := range numpyTestFiles(t, testsDir, args) {
		sb, err := npEngine(t).NewSandbox(context.Background(), lim)
		if err != nil {
			t.Fatal(err)
		}
		code := fmt.Sprintf("WORK = '/tmp/t'\nTESTS_ZIP = %q\nARGS = %s\n", tests.File(), numpySuiteArgs([]string{file})) + numpySuite
		res, err := sb.Execute(context.Background(), code, sandbox.ExecOptions{Packages: []*sandbox.Package{pylibs, tests}})
		_ = sb.Close(context.Background())
		if err != nil || res.Status != sandbox.StatusOK || !strings.Contains(res.Stdout, "NUMPY-SUITE ") {
			msg := fmt.Sprint(err)
			if res != nil && res.Error != nil {
				msg = res.Error.Type + ": " + res.Error.Message
			}
			crashed = append(crashed, file+": "+firstLine(msg))
			continue
		}
		r := parseSuite(t, res.Stdout)
		for m, c := range r.Modules {
			sum := total.Modules[m]
			sum.Passed += c.Passed
			sum.Failed += c.Failed
			sum.Skipped += c.Skipped
			total.Modules[m] = sum
		}
		total.Failures = append(total.Failures, r.Failures...)
		for f, n := range r.Files {
			total.Files[f] += n
		}
	}
	return total, crashed
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}

// runNumpySuiteNative runs the same selection with the host's python3.11 and
// Debian's python3-numpy.
func runNumpySuiteNative(t *testing.T, args []string) suiteReport {
	t.Helper()
	py := "/usr/bin/python3.11"
	if err := exec.Command(py, "-c", "import numpy, pytest, hypothesis").Run(); err != nil {
		check.Needs(t, err, "python3-numpy, python3-pytest and python3-hypothesis (.ci/install-deps)")
		t.Fatal(err)
	}
	abs, err := filepath.Abs(filepath.Join(numpyTestDir, "tests"))
	if err != nil {
		t.Fatal(err)
	}
	code := fmt.Sprintf("WORK = %q\nTESTS_DIR = %q\nARGS = %s\n", t.TempDir(), abs, numpySuiteArgs(args)) + numpySuite
	cmd := exec.Command(py, "-c", code)
	cmd.Env = append(os.Environ(), "PYTHONDONTWRITEBYTECODE=1")
	out, err := cmd.CombinedOutput()
	if err != nil && !strings.Contains(string(out), "NUMPY-SUITE ") {
		t.Fatalf("native suite: %v\n%s", err, out)
	}
	return parseSuite(t, string(out))
}

// compareSuites prints the table and checks that the sandbox passes at
// least 95% of what passes natively, per module and overall.
func compareSuites(t *testing.T, native, wasm suiteReport) {
	t.Helper()
	var mods []string
	for m := range native.Modules {
		mods = append(mods, m)
	}
	sort.Strings(mods)
	var b strings.Builder
	fmt.Fprintf(&b, "\n%-10s %8s %8s %8s | %8s %8s %8s\n", "module", "native ok", "failed", "skipped", "wasm ok", "failed", "skipped")
	var nTotal, wTotal int
	for _, m := range mods {
		n, w := native.Modules[m], wasm.Modules[m]
		nTotal += n.Passed
		wTotal += w.Passed
		fmt.Fprintf(&b, "%-10s %8d %8d %8d | %8d %8d %8d\n", m, n.Passed, n.Failed, n.Skipped, w.Passed, w.Failed, w.Skipped)
	}
	fmt.Fprintf(&b, "%-10s %8d %26s %8d\n", "total", nTotal, "|", wTotal)
	t.Log(b.String())
	var files []string
	for f := range native.Files {
		files = append(files, f)
	}
	sort.Strings(files)
	for _, f := range files {
		if n, w := native.Files[f], wasm.Files[f]; w < n {
			t.Logf("file %s: %d pass natively, %d in the sandbox", f, n, w)
		}
	}
	for _, f := range wasm.Failures {
		t.Logf("sandbox failure: %s: %s", f[0], f[1])
	}
	if nTotal == 0 {
		t.Fatal("nothing passed natively: the selection is empty")
	}
	if float64(wTotal) < 0.95*float64(nTotal) {
		t.Fatalf("the sandbox passes %d of the %d tests that pass natively (< 95%%)", wTotal, nTotal)
	}
}

// TestNumpyOwnSuite judges the numpy build by numpy's own tests, against
// Debian's numpy on the host: a fast selection by default, the five test
// packages of issue #12 with ERYX_NUMPY_FULL=1 (make test-numpy).
func TestNumpyOwnSuite(t *testing.T) {
	args := numpySuiteFast
	if os.Getenv("ERYX_NUMPY_FULL") == "1" {
		args = numpySuiteFull
	}
	native := runNumpySuiteNative(t, args)
	wasm, crashed := runNumpySuiteSandbox(t, args)
	for _, c := range crashed {
		t.Logf("sandbox: test file did not complete: %s", c)
	}
	compareSuites(t, native, wasm)
}
