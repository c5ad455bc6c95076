package sandbox_test

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"testing"

	"github.com/eryx-dev/eryx/internal/check"
	"github.com/eryx-dev/eryx/runtime/sandbox"
)

// fsProbe runs each statement in ROOT and prints its outcome: the value of
// the expression, "ok" for a statement, or the OSError's errno name (the
// numbers differ between WASI and Linux; the names are what code checks).
const fsProbe = `import errno, os, shutil, sqlite3, time
from pathlib import Path
os.chdir(ROOT)
for stmt in CASES:
    try:
        try:
            out = repr(eval(stmt))
        except SyntaxError:
            exec(stmt)
            out = "ok"
    except OSError as e:
        out = type(e).__name__ + " " + errno.errorcode.get(e.errno, str(e.errno))
    except sqlite3.Error as e:
        out = type(e).__name__ + ": " + str(e)
    print(stmt, "=>", out)
`

func fsProbeCode(root string, cases []string) string {
	quoted := make([]string, len(cases))
	for i, c := range cases {
		quoted[i] = fmt.Sprintf("%q", c)
	}
	return fmt.Sprintf("ROOT = %q\nCASES = [%s]\n", root, strings.Join(quoted, ",\n")) + fsProbe
}

// compareWithLinux runs cases in the sandbox's /tmp and natively in a
// temporary directory with Debian's python3.11, and wants the same output.
func compareWithLinux(t *testing.T, cases []string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), check.Bound)
	defer cancel()
	native, err := exec.CommandContext(ctx, "/usr/bin/python3.11", "-c", fsProbeCode(t.TempDir(), cases)).CombinedOutput()
	if err != nil {
		t.Fatalf("native python: %v\n%s", err, native)
	}
	res, err := engine.Execute(ctx, fsProbeCode("/tmp", cases), sandbox.ExecOptions{})
	if err != nil || res.Status != sandbox.StatusOK {
		t.Fatalf("sandbox: %v %s %+v\n%s", err, res.Status, res.Error, res.Stderr)
	}
	if res.Stdout != string(native) {
		t.Errorf("sandbox and Linux differ:\nsandbox:\n%s\nlinux:\n%s", res.Stdout, native)
	}
	return res.Stdout
}

// The in-memory /tmp answers like Linux where Python code relies on it
// (issue #19): each group runs in a fresh sandbox and natively.
func TestTmpPOSIXLikeLinux(t *testing.T) {
	t.Parallel()
	groups := []struct {
		name  string
		cases []string
		// want is a line the output must contain, so that a probe which
		// never reaches the interesting case cannot pass by agreeing.
		want string
	}{
		{"rename into own subdirectory", []string{
			"os.makedirs('a/x')",
			"open('a/f', 'w').write('data')",
			"os.rename('a', 'a/x/b')",
			"os.rename('a', 'a/x')",
			"os.rename('a/x', 'a/x')",
			"os.rename('a', 'a')",
			"sorted(os.listdir('a'))",
			"open('a/f').read()",
			"os.mkdir('e'); os.mkdir('e/sub')",
			"os.rename('a/x', 'e')",
			"os.rename('a/f', 'e')",
			"os.rename('e', 'a/f')",
			"os.rename('missing', 'z')",
			"os.rename('a/f', 'nodir/z')",
			"os.rename('a/f', 'a/f')",
			"os.rename('a/f', 'a/g'); sorted(os.listdir('a'))",
		}, "os.rename('a', 'a/x/b') => OSError EINVAL"},
		{"trailing slashes", []string{
			"open('nodir/', 'w')",
			"open('file', 'w').close()",
			"open('file/')",
			"open('file/', 'w')",
			"os.stat('file/')",
			"os.path.exists('file/')",
			"os.path.isdir('file/')",
			"os.unlink('file/')",
			"os.rmdir('file/')",
			"os.rename('file', 'other/')",
			"os.rename('file/', 'other')",
			"os.mkdir('d/')",
			"os.path.isdir('d/')",
			"os.rename('d/', 'd2/')",
			"os.rmdir('d2/')",
			"shutil.copyfile('file', 'missingdir/')",
			"os.listdir('file')",
			"os.unlink('.')",
		}, "open('nodir/', 'w') => IsADirectoryError EISDIR"},
		{"timestamps", []string{
			"open('f', 'w').close()",
			"os.utime('f', (1.5, 4.5))",
			"(os.stat('f').st_atime, os.stat('f').st_mtime)",
			"os.utime('f', ns=(10**9, 2 * 10**9))",
			"(os.stat('f').st_atime_ns, os.stat('f').st_mtime_ns)",
			"os.utime('f', None)",
			"abs(os.stat('f').st_mtime - time.time()) < 60, abs(os.stat('f').st_atime - time.time()) < 60",
			"os.utime('f', (7, 8)); open('f', 'a').write('x'); abs(os.stat('f').st_mtime - time.time()) < 60",
			"os.stat('f').st_atime",
			"os.utime('missing', None)",
			"os.utime('f/', None)",
		}, "(os.stat('f').st_atime, os.stat('f').st_mtime) => (1.5, 4.5)"},
		{"links and removal", []string{
			"open('f', 'w').close()",
			"os.mkdir('d')",
			"os.readlink('f')",
			"os.readlink('d')",
			"os.readlink('missing')",
			"os.path.islink('f')",
			"os.path.realpath('f') == os.path.join(os.getcwd(), 'f')",
			"os.rmdir('f')",
			"os.unlink('d')",
			"os.mkdir('d/x'); os.rmdir('d')",
			"os.mkdir('d')",
			"os.mkdir('missing/x')",
		}, "os.readlink('f') => OSError EINVAL"},
	}
	for _, g := range groups {
		t.Run(g.name, func(t *testing.T) {
			t.Parallel()
			out := compareWithLinux(t, g.cases)
			if !strings.Contains(out, g.want+"\n") {
				t.Errorf("output lacks %q:\n%s", g.want, out)
			}
		})
	}
}

// Two sqlite3 connections to one file database in one sandbox serialise
// like two on Linux: the second writer gets "database is locked" while the
// first holds its transaction, readers share, nothing is damaged.
func TestSqliteConnectionsLockLikeLinux(t *testing.T) {
	t.Parallel()
	out := compareWithLinux(t, []string{
		"a = sqlite3.connect('db', timeout=0, isolation_level=None); b = sqlite3.connect('db', timeout=0, isolation_level=None)",
		"a.execute('create table t(x)') and None",
		"a.execute('begin'); a.execute('insert into t values (1)') and None",
		"b.execute('insert into t values (2)')",
		"b.execute('select count(*) from t').fetchone()",
		"a.execute('commit') and None",
		"b.execute('insert into t values (2)') and None",
		"b.execute('begin exclusive') and None",
		"a.execute('select count(*) from t').fetchone()",
		"b.execute('commit') and None",
		"c = a.execute('select x from t'); c.fetchone()",
		"b.execute('select count(*) from t').fetchone()",
		"b.execute('insert into t values (3)') and None",
		"c.fetchall(); b.execute('insert into t values (3)') and None",
		"a.execute('pragma integrity_check').fetchone(), a.execute('select sum(x) from t').fetchone()",
		"a.close(); b.close(); sqlite3.connect('db').execute('select count(*) from t').fetchone()",
	})
	for _, want := range []string{
		"b.execute('insert into t values (2)') => OperationalError: database is locked",
		"=> (('ok',), (6,))",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

// Outside the writable /tmp the sandbox's file system is read-only or
// absent, with the errors Linux gives for a read-only mount and for a path
// that does not exist (not the ENOTCAPABLE/ENOSYS of bare WASI).
func TestPathsOutsideMountsLikeLinux(t *testing.T) {
	t.Parallel()
	cases := []string{
		"sorted(os.listdir('/'))",
		"os.getcwd(), sorted(os.listdir(os.getcwd()))",
		"os.path.isdir('/'), os.path.isdir('/lib'), os.path.isdir('/tmp')",
		"os.stat('/nonexistent')",
		"Path('/nonexistent').exists(), Path('/nonexistent/x').exists(), Path('/lib/nope').exists()",
		"os.listdir('/nonexistent')",
		"open('/x', 'w')",
		"os.mkdir('/x')",
		"os.mkdir('/tmp')",
		"os.rmdir('/lib')",
		"os.unlink('/nonexistent')",
		"os.readlink('/lib')",
		"os.readlink('/nonexistent')",
		"open('/lib/python311.zip', 'ab')",
		"open('/lib/new', 'w')",
		"os.unlink('/lib/python311.zip')",
		"os.unlink('/lib/nope')",
		"os.mkdir('/lib/x')",
		"os.mkdir('/lib/nope/x')",
		"os.mkdir('/lib')",
		"os.rename('/lib/python311.zip', '/lib/y')",
		"os.readlink('/lib/python311.zip')",
		"os.utime('/lib/nope')",
		"os.unlink('/pkg/nope')",
	}
	// Linux's answers: a read-only mount gives EROFS for a change to what
	// exists or a creation, and the lookup's error (ENOENT, EEXIST) first.
	want := []string{
		"['dev', 'lib', 'pkg', 'tmp']",
		"('/', ['dev', 'lib', 'pkg', 'tmp'])",
		"(True, True, True)",
		"FileNotFoundError ENOENT",
		"(False, False, False)",
		"FileNotFoundError ENOENT",
		"OSError EROFS",
		"OSError EROFS",
		"FileExistsError EEXIST",
		"OSError EROFS",
		"FileNotFoundError ENOENT",
		"OSError EINVAL",
		"FileNotFoundError ENOENT",
		"OSError EROFS",
		"OSError EROFS",
		"OSError EROFS",
		"FileNotFoundError ENOENT",
		"OSError EROFS",
		"FileNotFoundError ENOENT",
		"FileExistsError EEXIST",
		"OSError EROFS",
		"OSError EINVAL",
		"FileNotFoundError ENOENT",
		"FileNotFoundError ENOENT",
	}
	res := run(t, fsProbeCode("/", cases), sandbox.ExecOptions{})
	if res.Status != sandbox.StatusOK {
		t.Fatalf("status %s: %+v\n%s", res.Status, res.Error, res.Stderr)
	}
	var exp strings.Builder
	for i, c := range cases {
		fmt.Fprintf(&exp, "%s => %s\n", c, want[i])
	}
	if res.Stdout != exp.String() {
		t.Errorf("got\n%s\nwant\n%s", res.Stdout, exp.String())
	}
}

// asyncio after set_event_loop_policy(None), the stock pickler without
// dill's reducers, and socketpair's error (issue #19, runtime findings).
func TestGuestDefaultsLikeCPython(t *testing.T) {
	t.Parallel()
	cases := []struct{ name, code, want string }{
		{"asyncio default policy", "import asyncio\nasyncio.set_event_loop_policy(None)\nasync def f():\n    await asyncio.sleep(0.001)\n    return 'ok'\nprint(asyncio.run(f()))\nloop = asyncio.new_event_loop()\nprint(loop.run_until_complete(f()))\nloop.close()", "ok\nok\n"},
		{"stock pickler", "import io, pickle\nprint(any('dill' in getattr(f, '__module__', '') for f in pickle._Pickler.dispatch.values()))\ndef outer():\n    def inner(): pass\n    return inner\ntry:\n    pickle._Pickler(io.BytesIO()).dump(outer())\nexcept (pickle.PicklingError, AttributeError) as e:\n    print('refused')", "False\nrefused\n"},
		{"dill still pickles", "import dill\nf = lambda x: x + 1\nprint(dill.loads(dill.dumps(f))(1))", "2\n"},
		{"socketpair", "import errno, socket\ntry:\n    socket.socketpair()\nexcept OSError as e:\n    print(type(e).__name__, e.errno == errno.EOPNOTSUPP)", "OSError True\n"},
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
