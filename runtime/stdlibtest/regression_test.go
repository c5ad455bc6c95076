// Package stdlibtest runs CPython's own regression tests (Debian's
// libpython3.11-testsuite, the version pinned in runtime/build/debian-pins)
// inside sandboxes and natively with Debian's python3.11, in the same run,
// and compares them test by test.
//
// `make test` runs a fast subset and requires every natively passing test
// to pass in the sandbox, except the committed known differences;
// `make test-stdlib` (ERYX_STDLIB_TESTS=all) runs the broad selection and
// prints a per-module table.
package stdlibtest

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eryx-dev/eryx/runtime/sandbox"
)

// fast runs in make test: quick modules covering what issue #19 fixed.
var fast = []string{
	"test_bz2", "test_csv", "test_htmlparser", "test_json", "test_lzma",
	"test_shelve", "test_dbm_dumb", "test_zlib", "test_tabnanny", "test_textwrap",
}

// broad is make test-stdlib's selection: the modules whose subject can work
// in a WASI sandbox (test_threading and test_subprocess are left out: none
// of their subject exists there, and natively they take many minutes).
var broad = []string{
	"test_abc", "test_argparse", "test_array", "test_ast", "test_asyncio", "test_augassign", "test_base64",
	"test_baseexception", "test_binascii", "test_binop", "test_bisect", "test_bool", "test_builtin",
	"test_bytes", "test_bz2", "test_calendar", "test_cmath", "test_codecs", "test_collections",
	"test_colorsys", "test_compare", "test_complex", "test_configparser", "test_contains",
	"test_context", "test_contextlib", "test_copy", "test_csv", "test_dataclasses", "test_datetime",
	"test_dbm", "test_dbm_dumb", "test_decimal", "test_defaultdict", "test_deque", "test_descr",
	"test_dict", "test_difflib", "test_doctest", "test_dis", "test_email", "test_enum",
	"test_enumerate", "test_exceptions", "test_fileinput", "test_fnmatch", "test_float",
	"test_format", "test_fractions", "test_fstring", "test_functools", "test_generators",
	"test_getopt", "test_glob", "test_grammar", "test_gzip", "test_hashlib", "test_heapq",
	"test_hmac", "test_html", "test_htmlparser", "test_http_cookies", "test_inspect", "test_int",
	"test_io", "test_ipaddress", "test_isinstance", "test_iter", "test_itertools", "test_json",
	"test_keyword", "test_list", "test_locale", "test_logging", "test_long", "test_lzma",
	"test_math", "test_memoryview", "test_mimetypes", "test_operator", "test_os", "test_pathlib",
	"test_pickle", "test_pkgutil", "test_posixpath", "test_pprint", "test_property", "test_pydoc",
	"test_queue", "test_random", "test_re", "test_reprlib", "test_scope", "test_secrets",
	"test_set", "test_shelve", "test_shlex", "test_shutil", "test_slice", "test_sort",
	"test_statistics", "test_string", "test_string_literals", "test_stringprep",
	"test_struct", "test_sys", "test_tabnanny", "test_tarfile", "test_tempfile",
	"test_textwrap", "test_time", "test_tokenize", "test_traceback", "test_tuple",
	"test_typing", "test_unicodedata", "test_urllib", "test_urlparse", "test_uuid",
	"test_weakref", "test_with", "test_xml_etree", "test_zipfile", "test_zlib", "test_zoneinfo",
}

// outcome is what testdata/runner.py reports for one module.
type outcome struct {
	Module      string            `json:"module"`
	ImportError *string           `json:"import_error"`
	Tests       map[string]string `json:"tests"`
	Crash       string            `json:"-"` // the sandbox did not finish
}

func (o outcome) passed() map[string]bool {
	p := map[string]bool{}
	for id, r := range o.Tests {
		if r == "pass" {
			p[id] = true
		}
	}
	return p
}

// known reads testdata/known-differences.txt: test id pattern -> why it
// fails in a sandbox while passing natively.
func known(t *testing.T) map[string]string {
	t.Helper()
	f, err := os.Open("testdata/known-differences.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	out := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		id, why, _ := strings.Cut(line, " ")
		out[id] = strings.TrimSpace(why)
	}
	return out
}

func TestCPythonRegressionTests(t *testing.T) {
	suite := os.Getenv("ERYX_STDLIB_TESTSUITE")
	if suite == "" {
		t.Skip("ERYX_STDLIB_TESTSUITE is not set: run through make test or make test-stdlib (it fetches the suite)")
	}
	runner, err := os.ReadFile("testdata/runner.py")
	if err != nil {
		t.Fatal(err)
	}
	modules, all := fast, os.Getenv("ERYX_STDLIB_TESTS") != ""
	switch sel := os.Getenv("ERYX_STDLIB_TESTS"); sel {
	case "", "fast":
		all = false
	case "all":
		modules = broad
	default: // a comma-separated list of modules
		modules = strings.Split(sel, ",")
	}
	ctx := context.Background()
	eng, err := sandbox.NewEngine(ctx, sandbox.Config{Limits: sandbox.Limits{
		Timeout: 15 * time.Minute, MemoryBytes: 1 << 30, TmpBytes: 256 << 20,
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = eng.Close(ctx) }()
	pkg, err := sandbox.PackageFromFS("cpython_tests", os.DirFS(suite))
	if err != nil {
		t.Fatal(err)
	}

	type pair struct{ native, box outcome }
	results := make([]pair, len(modules))
	// Two at a time: one native, one sandboxed, on a two-core machine.
	sem := make(chan struct{}, 2)
	var wg sync.WaitGroup
	for i, m := range modules {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			results[i].native = runNative(t, string(runner), suite, m)
			results[i].box = runSandbox(ctx, eng, pkg, string(runner), m)
		}()
	}
	wg.Wait()

	knownDiff := known(t)
	var nativePass, bothPass int
	var table strings.Builder
	fmt.Fprintf(&table, "%-22s %7s %7s %7s  %s\n", "module", "native", "sandbox", "share", "note")
	for _, r := range results {
		np, bp := r.native.passed(), r.box.passed()
		common := 0
		var missing []string
		for id := range np {
			if bp[id] {
				common++
			} else {
				missing = append(missing, id)
			}
		}
		sort.Strings(missing)
		nativePass += len(np)
		bothPass += common
		note := ""
		switch {
		case r.box.Crash != "":
			note = r.box.Crash
		case r.box.ImportError != nil:
			note = "import: " + *r.box.ImportError
		}
		share := 100.0
		if len(np) > 0 {
			share = 100 * float64(common) / float64(len(np))
		}
		fmt.Fprintf(&table, "%-22s %7d %7d %6.1f%%  %s\n", r.native.Module, len(np), common, share, note)
		if all && share < 95 && len(missing) > 0 {
			// Why: the sandbox's outcomes of what passes natively, with examples.
			byOutcome := map[string][]string{}
			for _, id := range missing {
				o := r.box.Tests[id]
				if o == "" {
					o = "absent"
				}
				byOutcome[o] = append(byOutcome[o], id)
			}
			for _, o := range []string{"skip", "fail", "error", "absent"} {
				if ids := byOutcome[o]; len(ids) > 0 {
					fmt.Fprintf(&table, "    %s %d: %s\n", o, len(ids), strings.Join(ids[:min(len(ids), 4)], " "))
				}
			}
		}
		if !all {
			for _, id := range missing {
				if !isKnown(knownDiff, id) {
					t.Errorf("%s passes natively, not in the sandbox (%s); fix it or list it in testdata/known-differences.txt", id, r.box.Tests[id])
				}
			}
		}
	}
	total := 0.0
	if nativePass > 0 {
		total = 100 * float64(bothPass) / float64(nativePass)
	}
	fmt.Fprintf(&table, "%d modules: %d of %d natively passing tests pass in the sandbox (%.1f%%)\n",
		len(modules), bothPass, nativePass, total)
	t.Log("\n" + table.String())
	if nativePass == 0 {
		t.Fatal("no test passed natively: the suite or the runner is broken")
	}
}

func runNative(t *testing.T, runner, suite, module string) outcome {
	dir, err := os.MkdirTemp("", "eryx-stdlib-")
	if err != nil {
		t.Error(err)
		return outcome{Module: module}
	}
	defer func() { _ = os.RemoveAll(dir) }()
	resFile := filepath.Join(dir, "result.json")
	work := filepath.Join(dir, "work")
	if err := os.Mkdir(work, 0o755); err != nil {
		t.Error(err)
		return outcome{Module: module}
	}
	code := fmt.Sprintf("NAME = %q\nSUITE = %q\nPKG = None\nWORK = %q\n", module, suite, work) + runner +
		fmt.Sprintf("\nimport json\nwith open(%q, 'w') as f:\n    json.dump(result, f)\n", resFile)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "/usr/bin/python3.11", "-c", code)
	cmd.Dir = work
	// A test's own subprocess can outlive a killed interpreter and hold the
	// output pipe open: stop waiting for it.
	cmd.WaitDelay = 10 * time.Second
	out, err := cmd.CombinedOutput()
	data, rerr := os.ReadFile(resFile)
	if rerr != nil {
		t.Errorf("native %s: %v %v\n%s", module, err, rerr, tail(out))
		return outcome{Module: module}
	}
	var o outcome
	if err := json.Unmarshal(data, &o); err != nil {
		t.Errorf("native %s: %v", module, err)
	}
	return o
}

func runSandbox(ctx context.Context, eng *sandbox.Engine, pkg *sandbox.Package, runner, module string) outcome {
	code := fmt.Sprintf("NAME = %q\nSUITE = '/tmp/suite'\nPKG = %q\nWORK = '/tmp/work'\nimport os\nos.makedirs(WORK, exist_ok=True)\n",
		module, pkg.File()) + runner
	res, err := eng.Execute(ctx, code, sandbox.ExecOptions{Packages: []*sandbox.Package{pkg}})
	if err != nil {
		return outcome{Module: module, Crash: err.Error()}
	}
	if res.Status != sandbox.StatusOK {
		msg := string(res.Status)
		if res.Error != nil {
			msg += ": " + res.Error.Type + ": " + res.Error.Message
		}
		return outcome{Module: module, Crash: msg}
	}
	var o outcome
	if err := json.Unmarshal(res.Value, &o); err != nil {
		return outcome{Module: module, Crash: "result: " + err.Error()}
	}
	return o
}

func isKnown(patterns map[string]string, id string) bool {
	for p := range patterns {
		if ok, _ := path.Match(p, id); ok {
			return true
		}
	}
	return false
}

func tail(b []byte) string {
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return string(b)
}
