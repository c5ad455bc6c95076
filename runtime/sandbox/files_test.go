package sandbox_test

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eryx-dev/eryx/runtime/sandbox"
)

func input(p string, data []byte, fetches *atomic.Int32) sandbox.InputFile {
	return sandbox.InputFile{Path: p, Size: int64(len(data)), Fetch: func(context.Context) ([]byte, error) {
		if fetches != nil {
			fetches.Add(1)
		}
		return data, nil
	}}
}

// /data is read-only and fetched lazily: stat and listdir fetch nothing,
// the first open fetches once, and writes are refused.
func TestDataMount(t *testing.T) {
	t.Parallel()
	var fetches, unread atomic.Int32
	csv := []byte("region,amount\nnorth,3\nsouth,4\n")
	opts := sandbox.ExecOptions{Files: []sandbox.InputFile{
		input("sales.csv", csv, &fetches),
		input("q1/more.csv", []byte("x"), &unread),
	}}
	res := run(t, `import os, errno
print(sorted(os.listdir('/data')), os.listdir('/data/q1'))
print(os.stat('/data/sales.csv').st_size, os.path.isdir('/data/q1'))
print(open('/data/sales.csv').read() == open('/data/sales.csv').read())
with open('/data/sales.csv', 'rb') as f:
    f.seek(7); print(f.read(6))
for attempt in ("open('/data/sales.csv', 'w')", "open('/data/new.txt', 'w')", "os.mkdir('/data/d')",
                "os.remove('/data/sales.csv')", "open('/data/sales.csv', 'a')", "open('/data/nope')"):
    try:
        eval(attempt); print('allowed', attempt)
    except OSError as e:
        print(errno.errorcode[e.errno])
`, opts)
	if res.Status != sandbox.StatusOK {
		t.Fatalf("status %s: %+v", res.Status, res.Error)
	}
	want := "['q1', 'sales.csv'] ['more.csv']\n30 True\nTrue\nb'amount'\nEROFS\nEROFS\nEROFS\nEROFS\nEROFS\nENOENT\n"
	if res.Stdout != want {
		t.Fatalf("stdout:\n%s\nwant:\n%s", res.Stdout, want)
	}
	if fetches.Load() != 1 || unread.Load() != 0 {
		t.Fatalf("fetches: sales.csv %d (want 1), q1/more.csv %d (want 0)", fetches.Load(), unread.Load())
	}
}

// A fetch that fails, or returns another size than announced, is EIO.
func TestDataFetchFailure(t *testing.T) {
	t.Parallel()
	opts := sandbox.ExecOptions{Files: []sandbox.InputFile{
		{Path: "broken", Size: 3, Fetch: func(context.Context) ([]byte, error) { return nil, errors.New("store down") }},
		{Path: "short", Size: 3, Fetch: func(context.Context) ([]byte, error) { return []byte("x"), nil }},
	}}
	res := run(t, `import errno
for p in ('/data/broken', '/data/short'):
    try:
        open(p).read(); print('read')
    except OSError as e:
        print(errno.errorcode[e.errno])
`, opts)
	if res.Stdout != "EIO\nEIO\n" {
		t.Fatalf("stdout %q", res.Stdout)
	}
}

// A fetch blocked on the store does not outlive the execution's timeout.
func TestDataFetchStoppedByTimeout(t *testing.T) {
	t.Parallel()
	opts := sandbox.ExecOptions{
		Limits: sandbox.Limits{Timeout: 300 * time.Millisecond},
		Files: []sandbox.InputFile{{Path: "slow", Size: 1, Fetch: func(ctx context.Context) ([]byte, error) {
			<-ctx.Done()
			return nil, ctx.Err()
		}}},
	}
	res, err := engine.Execute(context.Background(), "open('/data/slow').read()\nwhile True: pass", opts)
	if !errors.Is(err, sandbox.ErrTimeout) || res.Status != sandbox.StatusTimeout {
		t.Fatalf("status %v, err %v", res, err)
	}
}

// Invalid input paths are refused before anything runs.
func TestDataBadPaths(t *testing.T) {
	t.Parallel()
	for _, p := range []string{"", "/abs", "../up", "a/../b", "a//b", ".", "nul\x00", strings.Repeat("x", 256), strings.Repeat("a/", 600) + "x"} {
		_, err := engine.Execute(context.Background(), "pass", sandbox.ExecOptions{Files: []sandbox.InputFile{input(p, nil, nil)}})
		if err == nil {
			t.Errorf("input path %q accepted", p)
		}
	}
	_, err := engine.Execute(context.Background(), "pass", sandbox.ExecOptions{Files: []sandbox.InputFile{
		input("a", nil, nil), input("a/b", nil, nil)}})
	if err == nil {
		t.Error("a file and a directory of the same name accepted")
	}
}

// /output comes back whatever the outcome, separate from /tmp, and its
// caps refuse writes and name the limit.
func TestOutputMount(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		code      string
		limits    sandbox.Limits
		status    sandbox.Status
		files     map[string]string
		limit     string
		stdoutHas string
	}{
		{name: "ok", code: `import os
os.makedirs('/output/charts')
open('/output/summary.csv', 'w').write('a,b\n1,2\n')
open('/output/charts/c.svg', 'wb').write(b'<svg/>')
open('/tmp/scratch', 'w').write('not an output')
open('/output/gone', 'w').write('x'); os.remove('/output/gone')`,
			status: sandbox.StatusOK, files: map[string]string{"summary.csv": "a,b\n1,2\n", "charts/c.svg": "<svg/>"}},
		{name: "raises", code: "open('/output/partial.txt', 'w').write('half')\nraise ValueError('boom')",
			status: sandbox.StatusError, files: map[string]string{"partial.txt": "half"}},
		{name: "timeout", code: "f = open('/output/log.txt', 'w'); f.write('started'); f.flush()\nwhile True: pass",
			limits: sandbox.Limits{Timeout: 300 * time.Millisecond},
			status: sandbox.StatusTimeout, files: map[string]string{"log.txt": "started"}},
		{name: "bytes cap", code: `import errno
open('/output/small.txt', 'w').write('kept')
try:
    with open('/output/big.bin', 'wb') as f: f.write(b'x' * 5000)
except OSError as e: print('refused', errno.errorcode[e.errno])`,
			limits: sandbox.Limits{OutputFilesBytes: 4096},
			status: sandbox.StatusOK, files: map[string]string{"small.txt": "kept", "big.bin": ""},
			limit: sandbox.LimitOutputFilesBytes, stdoutHas: "refused ENOSPC"},
		{name: "count cap", code: `import errno
n = 0
try:
    for i in range(100): open(f'/output/f{i}', 'w').close(); n += 1
except OSError as e: print('refused after', n, errno.errorcode[e.errno])`,
			limits: sandbox.Limits{OutputFiles: 3},
			status: sandbox.StatusOK, files: map[string]string{"f0": "", "f1": "", "f2": ""},
			limit: sandbox.LimitOutputFiles, stdoutHas: "refused after 3 EIO"},
		{name: "long name", code: `import errno, os
for p in ('/output/' + 'n' * 300, '/output/' + 'd/' * 600 + 'x'):
    try: open(p, 'w'); print('created')
    except OSError as e: print(errno.errorcode[e.errno])`,
			status: sandbox.StatusOK, files: map[string]string{}, stdoutHas: "ENAMETOOLONG\n"},
		{name: "escape", code: `import os, errno
open('/tmp/scratch', 'w').write('tmp')
open('/output/real', 'w').write('out')
for attempt in ("open('/output/../tmp/x', 'w')", "os.symlink('/tmp/scratch', '/output/link')",
                "os.symlink('real', '/output/link')", "os.link('/output/real', '/output/hard')",
                "os.rename('/tmp/scratch', '/output/moved')", "os.mkdir('/output/d\x00x')"):
    try: eval(attempt); print('allowed', attempt)
    except (OSError, ValueError) as e: print(type(e).__name__)
print(sorted(os.listdir('/tmp')), sorted(os.listdir('/output')))`,
			status: sandbox.StatusOK, files: map[string]string{"real": "out"},
			stdoutHas: "['scratch'] ['real']"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			res, _ := engine.Execute(context.Background(), tt.code, sandbox.ExecOptions{Limits: tt.limits})
			if res == nil || res.Status != tt.status {
				t.Fatalf("result %+v", res)
			}
			got := map[string]string{}
			for _, f := range res.OutputFiles {
				got[f.Path] = string(f.Data)
			}
			if len(got) != len(tt.files) {
				t.Fatalf("files %v, want %v (stdout %q, error %+v)", got, tt.files, res.Stdout, res.Error)
			}
			for p, data := range tt.files {
				if g, ok := got[p]; !ok || g != data {
					t.Errorf("file %s = %q, want %q", p, g, data)
				}
			}
			if res.OutputFilesLimit != tt.limit {
				t.Errorf("limit %q, want %q", res.OutputFilesLimit, tt.limit)
			}
			if !strings.Contains(res.Stdout, tt.stdoutHas) {
				t.Errorf("stdout %q lacks %q", res.Stdout, tt.stdoutHas)
			}
		})
	}
}

// A sandbox reused by the next execution (a warm session) starts with an
// empty /output and without the previous inputs.
func TestOutputFreshPerExecution(t *testing.T) {
	t.Parallel()
	sb, err := engine.NewSandbox(context.Background(), sandbox.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sb.Close(context.Background()) }()
	res, err := sb.Execute(context.Background(), "open('/output/a', 'w').write('1')\nprint(open('/data/in').read())",
		sandbox.ExecOptions{Session: true, Files: []sandbox.InputFile{input("in", []byte("first"), nil)}})
	if err != nil || len(res.OutputFiles) != 1 || res.Stdout != "first\n" {
		t.Fatalf("first: %+v %v", res, err)
	}
	res, err = sb.Execute(context.Background(), "import os\nprint(os.listdir('/output'), os.listdir('/data'))", sandbox.ExecOptions{Session: true})
	if err != nil || len(res.OutputFiles) != 0 || res.Stdout != "[] []\n" {
		t.Fatalf("second: %+v %v", res, err)
	}
}
