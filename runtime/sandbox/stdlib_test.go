package sandbox_test

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"os"
	"os/exec"
	"reflect"
	"sort"
	"strings"
	"testing"

	"github.com/eryx-dev/eryx/internal/check"
	"github.com/eryx-dev/eryx/runtime/assets"
	"github.com/eryx-dev/eryx/runtime/sandbox"
)

// readAbsent parses testdata/stdlib-absent.txt: module name -> reason.
func readAbsent(t *testing.T) map[string]string {
	t.Helper()
	f, err := os.Open("testdata/stdlib-absent.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	absent := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name, reason, _ := strings.Cut(line, " ")
		if strings.TrimSpace(reason) == "" {
			t.Fatalf("stdlib-absent.txt: %s has no reason", name)
		}
		absent[name] = strings.TrimSpace(reason)
	}
	return absent
}

// Every module of sys.stdlib_module_names imports, except the committed list
// of deliberate absences: a module can neither go missing silently nor stay
// listed once it works.
func TestStdlibImportable(t *testing.T) {
	t.Parallel()
	const code = `import importlib, sys, warnings
warnings.simplefilter("ignore")  # deprecated modules (asynchat, imp, ...) still count
failed = []
for name in sorted(sys.stdlib_module_names):
    try:
        importlib.import_module(name)
    except ImportError:
        failed.append(name)
result = failed
`
	res := run(t, code, sandbox.ExecOptions{})
	if res.Status != sandbox.StatusOK {
		t.Fatalf("status %s: %+v\n%s", res.Status, res.Error, res.Stderr)
	}
	var failed []string
	if err := json.Unmarshal(res.Value, &failed); err != nil {
		t.Fatalf("result %q: %v", string(res.Value), err)
	}
	absent := readAbsent(t)
	for _, name := range failed {
		if _, ok := absent[name]; !ok {
			t.Errorf("%s does not import in the sandbox and is not in testdata/stdlib-absent.txt", name)
		}
		delete(absent, name)
	}
	for name := range absent {
		t.Errorf("%s imports now: remove it from testdata/stdlib-absent.txt", name)
	}
}

// The modules issue #19 found missing work, not just import.
func TestStdlibModulesWork(t *testing.T) {
	t.Parallel()
	cases := []struct{ name, code, want string }{
		{"lzma", "import lzma\nd = b'eryx' * 1000\nprint(lzma.decompress(lzma.compress(d)) == d, lzma.decompress(lzma.compress(d, format=lzma.FORMAT_ALONE)) == d)", "True True\n"},
		{"bz2", "import bz2\nd = b'eryx' * 1000\nprint(bz2.decompress(bz2.compress(d)) == d)", "True\n"},
		{"tarfile xz", "import io, tarfile\nb = io.BytesIO()\nwith tarfile.open(fileobj=b, mode='w:xz') as t:\n    i = tarfile.TarInfo('a'); i.size = 2; t.addfile(i, io.BytesIO(b'hi'))\nb.seek(0)\nwith tarfile.open(fileobj=b, mode='r:*') as t:\n    print(t.extractfile('a').read())", "b'hi'\n"},
		{"zipfile bzip2", "import io, zipfile\nb = io.BytesIO()\nwith zipfile.ZipFile(b, 'w', zipfile.ZIP_BZIP2) as z: z.writestr('a', 'x' * 100)\nprint(zipfile.ZipFile(b).read('a') == b'x' * 100)", "True\n"},
		{"zoneinfo", "import datetime, zoneinfo\nz = zoneinfo.ZoneInfo('Europe/Paris')\nprint(datetime.datetime(2024, 7, 1, tzinfo=z).utcoffset(), datetime.datetime(2024, 1, 1, tzinfo=z).tzname())\nprint('America/New_York' in zoneinfo.available_timezones())", "2:00:00 CET\nTrue\n"},
		{"unknown zone", "import zoneinfo\ntry:\n    zoneinfo.ZoneInfo('Mars/Olympus_Mons')\nexcept zoneinfo.ZoneInfoNotFoundError as e:\n    print('not found')", "not found\n"},
		{"unittest", "import io, unittest\nclass T(unittest.TestCase):\n    def test_ok(self): self.assertEqual(1, 1)\n    def test_bad(self): self.assertEqual(1, 2)\nr = unittest.TextTestRunner(stream=io.StringIO()).run(unittest.defaultTestLoader.loadTestsFromTestCase(T))\nprint(r.testsRun, len(r.failures))", "2 1\n"},
		{"doctest", "import doctest\ndef f():\n    '''\n    >>> 1 + 1\n    2\n    '''\nprint(doctest.run_docstring_examples(f, {}, verbose=False))", "None\n"},
		{"pydoc", "import pydoc\nprint(pydoc.render_doc(len, renderer=pydoc.plaintext).splitlines()[0])", "Python Library Documentation: built-in function len in module builtins\n"},
		{"help", "import io, contextlib\nb = io.StringIO()\nwith contextlib.redirect_stdout(b):\n    help('keywords')\nprint('False' in b.getvalue())", "True\n"},
		{"shelve", "import shelve\nwith shelve.open('/tmp/s') as s: s['k'] = [1, 2]\nwith shelve.open('/tmp/s') as s: print(s['k'])", "[1, 2]\n"},
		{"sysconfig", "import sysconfig\nprint(sysconfig.get_config_var('HOST_GNU_TYPE'))", "wasm32-unknown-wasi\n"},
		{"stdlib source", "import inspect, json\nprint(inspect.getsource(json.dumps).splitlines()[0])", "def dumps(obj, *, skipkeys=False, ensure_ascii=True, check_circular=True,\n"},
		{"traceback into the stdlib", "import json, traceback\ntry:\n    json.loads('{')\nexcept ValueError:\n    print('return _default_decoder.decode(s)' in traceback.format_exc())", "True\n"},
		// gh-106052 (in Debian's security update; our patch): a possessive
		// repeat that fails must not leave the input position moved.
		{"re possessive", "import re\nprint(re.match('(?:ab?c)++', 'aca').span(), re.match('(?:ab?c)?+', 'a').span(), re.match('(?>(?:ab?c){1,3})', 'aca').span())", "(0, 2) (0, 0) (0, 2)\n"},
		// CVE-2026-18503 (security update's csv.py): linear, and correct.
		{"csv sniff", "import csv\nprint(csv.Sniffer().sniff('a,\"b\",c\\n' * 3 + ',\"' * 20000).delimiter)", ",\n"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			res := run(t, tc.code, sandbox.ExecOptions{})
			if res.Status != sandbox.StatusOK || res.Stdout != tc.want {
				t.Errorf("status %s, stdout %q, want %q\nerror: %+v\n%s", res.Status, res.Stdout, tc.want, res.Error, res.Stderr)
			}
		})
	}
}

// A decompression bomb through lzma or bz2 is stopped by the memory limit
// like any other allocation: a MemoryError, the sandbox alive.
func TestDecompressionBombHitsMemoryLimit(t *testing.T) {
	t.Parallel()
	// 1 GiB of zeros: one 16 MiB stream compressed natively, repeated (both
	// formats decompress concatenated streams), so that making it is quick.
	gen := `import bz2, lzma, sys
z = b"\0" * (1 << 24)
one = {"xz": lambda: lzma.compress(z, preset=1), "bz2": lambda: bz2.compress(z, 1)}[sys.argv[1]]()
sys.stdout.buffer.write(one * 64)
`
	for _, format := range []string{"xz", "bz2"} {
		t.Run(format, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), check.Bound)
			defer cancel()
			bomb, err := exec.CommandContext(ctx, "/usr/bin/python3.11", "-c", gen, format).Output()
			if err != nil {
				t.Fatalf("native python: %v", err)
			}
			mod := map[string]string{"xz": "lzma", "bz2": "bz2"}[format]
			code := "import base64, " + mod + "\nd = " + mod + ".decompress(base64.b64decode('" + base64.StdEncoding.EncodeToString(bomb) + "'))\nprint(len(d))"
			res, err := engine.Execute(ctx, code, sandbox.ExecOptions{Limits: sandbox.Limits{MemoryBytes: 64 << 20}})
			if err != nil {
				t.Fatal(err)
			}
			if res.Status != sandbox.StatusError || res.Error == nil || res.Error.Type != "MemoryError" {
				t.Fatalf("status %s, error %+v, stdout %q", res.Status, res.Error, res.Stdout)
			}
		})
	}
}

// eryx.runtime_info() in the sandbox, assets.RuntimeInfo() on the host and
// the pins in runtime/build/debian-pins agree: the versions a binary
// reports are the ones it was built from.
func TestRuntimeInfoMatchesPins(t *testing.T) {
	t.Parallel()
	res := run(t, "import eryx\nresult = eryx.runtime_info()", sandbox.ExecOptions{})
	if res.Status != sandbox.StatusOK {
		t.Fatalf("status %s: %+v", res.Status, res.Error)
	}
	var guest assets.Info
	if err := json.Unmarshal(res.Value, &guest); err != nil {
		t.Fatal(err)
	}
	host, err := assets.RuntimeInfo()
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(guest, host) {
		t.Errorf("guest %+v\nhost %+v", guest, host)
	}
	pins, err := os.ReadFile("../build/debian-pins")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, line := range strings.Split(string(pins), "\n") {
		f := strings.Fields(line)
		if len(f) < 3 || strings.HasPrefix(f[0], "#") || f[0] == "test" {
			continue
		}
		got := host.DebianSources[f[1]]
		if f[0] == "binary" {
			got = host.DebianPackages[f[1]]
		}
		if got != f[2] {
			t.Errorf("%s %s: pinned %s, runtime reports %q", f[0], f[1], f[2], got)
		}
		names = append(names, f[1])
	}
	sort.Strings(names)
	if len(names) < 9 || host.Python != "3.11.2" || host.Tzdata == "" {
		t.Errorf("pins %v, info %+v", names, host)
	}
}
