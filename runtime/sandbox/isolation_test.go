package sandbox_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eryx-dev/eryx/runtime/sandbox"
)

func TestIsolationFromTheHost(t *testing.T) {
	t.Setenv("ERYX_SECRET_FOR_TEST", "leaked") // must not reach the guest
	tests := []struct {
		name string
		code string
		want string
	}{
		{"no environment", "import os\nprint(dict(os.environ))", "{}\n"},
		{"no host files", "try:\n    print(open('/etc/passwd').read())\nexcept OSError:\n    print('blocked')", "blocked\n"},
		{"no host dirs", "import os\nfor d in ['/', '/etc', '/proc', '/root', '..']:\n    try:\n        print(d, os.listdir(d))\n    except OSError:\n        print('blocked')",
			// "/" lists the sandbox's own mounts, nothing of the host.
			"/ ['lib', 'pkg', 'dev', 'tmp']\nblocked\nblocked\nblocked\nblocked\n"},
		{"stdlib read-only", "try:\n    with open('/lib/python311.zip', 'ab') as f:\n        f.write(b'x')\nexcept OSError:\n    print('blocked')", "blocked\n"},
		{"no writable fs outside /tmp", "for p in ['/x', '/lib/x', '/dev/x']:\n    try:\n        open(p, 'w').write('x')\n    except OSError:\n        print('blocked')", "blocked\nblocked\nblocked\n"},
		{"private /tmp", "import os, tempfile\nwith tempfile.NamedTemporaryFile('w+', delete=False) as f:\n    f.write('data')\nos.makedirs('/tmp/a/b')\nos.rename(f.name, '/tmp/a/b/f')\nprint(open('/tmp/a/b/f').read(), sorted(os.listdir('/tmp')))", "data ['a']\n"},
		{"dev null", "open('/dev/null', 'w').write('x' * 100)\nprint(repr(open('/dev/null').read()))", "''\n"},
		// Without a gateway, the one outcome is the policy's refusal (not
		// any exception: a NameError in the shim would have passed).
		{"no sockets", "import socket\ntry:\n    socket.create_connection(('127.0.0.1', 22), timeout=1)\nexcept PermissionError as e:\n    print(type(e).__name__, e)",
			"NetworkPolicyError eryx network policy: networking is off for this execution (no network gateway)\n"},
		{"no subprocess", "import os\ntry:\n    os.system('ls')\nexcept (OSError, AttributeError) as e:\n    print('no')", "no\n"},
		{"no threads", "import threading\ntry:\n    threading.Thread(target=print).start()\nexcept RuntimeError:\n    print('no')", "no\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			res := run(t, tt.code, sandbox.ExecOptions{})
			if res.Status != sandbox.StatusOK || res.Stdout != tt.want {
				t.Fatalf("stdout %q (status %q, error %+v), want %q", res.Stdout, res.Status, res.Error, tt.want)
			}
		})
	}
}

func TestRealClocks(t *testing.T) {
	t.Parallel()
	before := float64(time.Now().UnixNano()) / 1e9
	res := run(t, "import time\nt0 = time.monotonic()\ntime.sleep(0.05)\nresult = [time.time(), time.monotonic() - t0]", sandbox.ExecOptions{})
	var got [2]float64
	if err := json.Unmarshal(res.Value, &got); err != nil {
		t.Fatal(err)
	}
	after := float64(time.Now().UnixNano()) / 1e9
	if got[0] < before-1 || got[0] > after+1 {
		t.Errorf("time.time() = %f, host between %f and %f", got[0], before, after)
	}
	if got[1] < 0.05 {
		t.Errorf("monotonic elapsed %f for a 50 ms sleep", got[1])
	}
}

// Every sandbox starts from the same memory image; reseeding after restore
// must still give each its own random numbers.
func TestRandomnessDiffersAcrossSandboxes(t *testing.T) {
	t.Parallel()
	const code = "import random, os, uuid, secrets\nresult = [random.random(), os.urandom(8).hex(), str(uuid.uuid4()), secrets.token_hex(8)]"
	seen := map[string]bool{}
	for i := 0; i < 5; i++ {
		res := run(t, code, sandbox.ExecOptions{})
		var vals []any
		if err := json.Unmarshal(res.Value, &vals); err != nil {
			t.Fatalf("%s: %v", res.Value, err)
		}
		for _, v := range vals {
			k, _ := json.Marshal(v)
			if seen[string(k)] {
				t.Fatalf("value %s repeated across sandboxes", k)
			}
			seen[string(k)] = true
		}
	}
}

// Job A does its worst to the sandbox; job B, in the next sandbox, sees none of it.
func TestNothingLeaksBetweenJobs(t *testing.T) {
	t.Parallel()
	jobA := `
import builtins, sys, json, os
secret = 'from-A'
builtins.print = lambda *a, **k: None
builtins.len = lambda x: -1
json.dumps = lambda *a, **k: 'hijacked'
sys.modules['evil'] = type(sys)('evil')
sys.path.insert(0, '/evil')
os.environ['LEAK'] = '1'
open('/tmp/leak', 'w').write('x')
hog = bytearray(80 * 1024 * 1024)
`
	resA := run(t, jobA, sandbox.ExecOptions{})
	if resA.Status != sandbox.StatusOK {
		t.Fatalf("job A: %+v", resA.Error)
	}
	jobB := `
import builtins, sys, json, os
print('secret' in globals(), len('abc'), json.dumps(1), 'evil' in sys.modules, '/evil' in sys.path, 'LEAK' in os.environ, os.path.exists('/tmp/leak'))
`
	resB := run(t, jobB, sandbox.ExecOptions{})
	if resB.Stdout != "False 3 1 False False False False\n" {
		t.Fatalf("job B saw job A's changes: %q (%+v)", resB.Stdout, resB.Error)
	}
	if resB.Stats.PeakMemoryBytes >= resA.Stats.PeakMemoryBytes {
		t.Fatalf("job B starts with job A's memory: %d >= %d", resB.Stats.PeakMemoryBytes, resA.Stats.PeakMemoryBytes)
	}
}

func TestConcurrentSandboxes(t *testing.T) {
	t.Parallel()
	var wg sync.WaitGroup
	errs := make(chan string, 16)
	for i := 0; i < 16; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			res, err := engine.Execute(context.Background(), "n = "+strconv.Itoa(i)+"\nprint(sum(range(n * 1000)))", sandbox.ExecOptions{})
			want := strconv.Itoa((i*1000)*(i*1000-1)/2) + "\n"
			switch {
			case err != nil: // res may be nil
				errs <- fmt.Sprintf("sandbox %d: %v", i, err)
			case res.Stdout != want:
				errs <- strings.TrimSpace(res.Stdout) + " != " + want
			}
		}(i)
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
}

func TestSQLite(t *testing.T) {
	t.Parallel()
	code := `
import sqlite3
mem = sqlite3.connect(':memory:')
mem.execute('create table t (k text primary key, v integer)')
mem.executemany('insert into t values (?, ?)', [(f'k{i}', i) for i in range(1000)])
total = mem.execute('select sum(v) from t').fetchone()[0]
disk = sqlite3.connect('/tmp/db.sqlite')
disk.execute('create table t (x)')
disk.execute('insert into t values (42)')
disk.commit()
disk.close()
again = sqlite3.connect('/tmp/db.sqlite').execute('select x from t').fetchone()[0]
result = [total, again, sqlite3.sqlite_version]
`
	res := run(t, code, sandbox.ExecOptions{})
	if res.Status != sandbox.StatusOK {
		t.Fatalf("%s %+v", res.Status, res.Error)
	}
	var got []any
	if err := json.Unmarshal(res.Value, &got); err != nil || got[0] != float64(499500) || got[1] != float64(42) {
		t.Fatalf("%s", res.Value)
	}
}
