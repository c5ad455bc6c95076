package main

import (
	"archive/zip"
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/eryx-dev/eryx/internal/check"
	"github.com/eryx-dev/eryx/internal/embednats"
	"github.com/eryx-dev/eryx/internal/testenv"
	"github.com/eryx-dev/eryx/jobs"
	"github.com/eryx-dev/eryx/jobs/worker"
	"github.com/eryx-dev/eryx/kvstate"
	"github.com/eryx-dev/eryx/runtime/pool"
	"github.com/eryx-dev/eryx/runtime/sandbox"
)

// engine is shared by every test (it takes a second or two to build).
var engine *sandbox.Engine

func TestMain(m *testing.M) { testenv.Main(m, "eryx-submit", &engine) }

// platform starts a real NATS server and a worker with sessions, and
// returns the server's URL.
// testSnapshotKey is the platform's snapshot key in these tests.
const testSnapshotKey = "eryx-submit-test-snapshot-key-0123456789"

func platform(t *testing.T) string {
	t.Helper()
	ns, err := embednats.Start(embednats.Options{Listen: "127.0.0.1:-1", StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ns.Shutdown)
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	ctx, cancel := context.WithCancel(context.Background())
	js, _ := jetstream.New(nc)
	store, err := kvstate.Open(ctx, js, kvstate.Config{MACKey: []byte(testSnapshotKey)})
	if err != nil {
		t.Fatal(err)
	}
	p, err := pool.New(ctx, engine, pool.Config{MaxSize: 6, MinIdle: 2})
	if err != nil {
		t.Fatal(err)
	}
	w, err := worker.New(ctx, nc, p, worker.Config{
		ID: "w1", Concurrency: 2, AckWait: 2 * time.Second, FetchWait: time.Second,
		Policy:   jobs.Policy{Timeout: 10 * time.Second, MaxFuel: 1_000_000_000_000},
		Sessions: worker.KVSessions(store),
	})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = w.Run(ctx); close(done) }()
	t.Cleanup(func() {
		cancel()
		<-done
		_ = p.Close(context.Background())
	})
	return ns.ClientURL()
}

// buffer is a concurrency-safe writer that can be waited on.
type buffer struct {
	mu    sync.Mutex
	b     bytes.Buffer
	wrote chan struct{}
	once  sync.Once
}

func newBuffer() *buffer { return &buffer{wrote: make(chan struct{})} }

func (b *buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.once.Do(func() { close(b.wrote) })
	return b.b.Write(p)
}

func (b *buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

type invocation struct {
	code           int
	stdout, stderr string
}

// submit runs eryx-submit's main logic against url.
func submit(t *testing.T, url, stdin string, args ...string) invocation {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	stdout, stderr := newBuffer(), newBuffer()
	if !slices.Contains(args, "--nats") {
		args = append(args, "--nats", url)
	}
	code := run(ctx, args, strings.NewReader(stdin), stdout, stderr)
	return invocation{code, stdout.String(), stderr.String()}
}

func TestExitCodes(t *testing.T) {
	url := platform(t)
	file := filepath.Join(t.TempDir(), "job.py")
	if err := os.WriteFile(file, []byte("print('from a file')\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name      string
		stdin     string
		args      []string
		code      int
		stdout    string // exact, when not empty
		stderrHas string
		stdoutHas string
	}{
		{name: "ok", args: []string{"-c", "print('hi')"}, code: 0, stdout: "hi\n"},
		{name: "file", args: []string{file}, code: 0, stdout: "from a file\n"},
		{name: "flags after the file", args: []string{file, "--timeout", "5s"}, code: 0, stdout: "from a file\n"},
		{name: "stdin", stdin: "print(sum(range(10)))", args: []string{"-"}, code: 0, stdout: "45\n"},
		{name: "stderr streams", args: []string{"-c", "import sys; print('e', file=sys.stderr)"}, code: 0, stderrHas: "e\n"},
		{name: "python error", args: []string{"-c", "raise ValueError('boom')"}, code: 1, stderrHas: "ValueError: boom"},
		{name: "sys.exit(3)", args: []string{"-c", "import sys; sys.exit(3)"}, code: 1},
		{name: "sys.exit(0)", args: []string{"-c", "import sys; sys.exit(0)"}, code: 0},
		{name: "timeout", args: []string{"--timeout", "200ms", "-c", "while True: pass"}, code: 124, stderrHas: "timed out"},
		{name: "fuel exhausted", args: []string{"--fuel", "1000000", "-c", "while True: pass"}, code: 125, stderrHas: "ran out of fuel"},
		{name: "fuel above the maximum", args: []string{"--fuel", "99999999999999999", "-c", "1"}, code: 2, stderrHas: "invalid_limits"},
		{name: "rejected", args: []string{"--memory", "99999", "-c", "print(1)"}, code: 2, stderrHas: "invalid_limits"},
		{name: "unknown package", args: []string{"--package", "nope", "-c", "print(1)"}, code: 2, stderrHas: "unknown_package"},
		{name: "network beyond the policy", args: []string{"--network", `{"allow":["example.com"]}`, "-c", "1"}, code: 2, stderrHas: "not_allowed"},
		{name: "no network", args: []string{"--no-network", "-c", "print(1)"}, code: 0, stdout: "1\n"},
		{name: "network not JSON", args: []string{"--network", "{", "-c", "1"}, code: 2, stderrHas: "not valid JSON"},
		{name: "json", args: []string{"--json", "-c", "print(2)\nresult = [1]"}, code: 0, stdoutHas: `"status": "ok"`},
		{name: "no code", args: []string{}, code: 2, stderrHas: "nothing to run"},
		{name: "empty code", args: []string{"-c", ""}, code: 0},
		{name: "empty code, json", args: []string{"--json", "-c", ""}, code: 0, stdoutHas: `"status": "ok"`},
		{name: "empty code and file", args: []string{"-c", "", file}, code: 2, stderrHas: "not both"},
		{name: "code and file", args: []string{"-c", "1", file}, code: 2, stderrHas: "not both"},
		{name: "missing file", args: []string{"/nonexistent.py"}, code: 2},
		{name: "bad flag", args: []string{"--bogus"}, code: 2},
		{name: "no server", args: []string{"--nats", "nats://127.0.0.1:1", "-c", "1"}, code: 2, stderrHas: "connecting"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := submit(t, url, tt.stdin, tt.args...)
			if got.code != tt.code {
				t.Fatalf("exit %d, want %d\nstdout: %s\nstderr: %s", got.code, tt.code, got.stdout, got.stderr)
			}
			if tt.stdout != "" && got.stdout != tt.stdout {
				t.Errorf("stdout %q, want %q", got.stdout, tt.stdout)
			}
			if !strings.Contains(got.stdout, tt.stdoutHas) {
				t.Errorf("stdout %q, want %q in it", got.stdout, tt.stdoutHas)
			}
			if !strings.Contains(got.stderr, tt.stderrHas) {
				t.Errorf("stderr %q, want %q in it", got.stderr, tt.stderrHas)
			}
		})
	}
}

func TestJSONResultDocument(t *testing.T) {
	url := platform(t)
	got := submit(t, url, "", "--json", "--id", "doc1", "-c", "print('x')\nresult = {'a': 1}")
	var res jobs.Result
	if err := json.Unmarshal([]byte(got.stdout), &res); err != nil {
		t.Fatalf("%v in %q", err, got.stdout)
	}
	var value bytes.Buffer
	_ = json.Compact(&value, res.Result)
	if res.V != jobs.Version || res.Tenant != jobs.DefaultTenant || res.ID != "doc1" || res.Status != jobs.StatusOK || res.Stdout != "x\n" || value.String() != `{"a":1}` || res.Worker != "w1" {
		t.Errorf("%+v", res)
	}
	// The same id again replays the result rather than running twice.
	again := submit(t, url, "", "--id", "doc1", "-c", "print('x')\nresult = {'a': 1}")
	if again.code != 0 || again.stdout != "x\n" || !strings.Contains(again.stderr, "submitted before") {
		t.Errorf("resubmission: %+v", again)
	}
	attached := submit(t, url, "", "attach", "doc1")
	if attached.code != 0 || attached.stdout != "x\n" {
		t.Errorf("attach: %+v", attached)
	}
}

func TestInterruptCancelsTheJob(t *testing.T) {
	url := platform(t)
	ctx, interrupt := context.WithCancel(context.Background())
	stdout, stderr := newBuffer(), newBuffer()
	exit := make(chan int, 1)
	go func() {
		exit <- run(ctx, []string{"--nats", url, "-c", "import time\nprint('started', flush=True)\ntime.sleep(30)"},
			strings.NewReader(""), stdout, stderr)
	}()
	select {
	case <-stdout.wrote:
	case <-time.After(15 * time.Second):
		t.Fatal("no output")
	}
	interrupt() // Ctrl-C
	select {
	case code := <-exit:
		if code != exitCancelled {
			t.Fatalf("exit %d, want %d; stderr %s", code, exitCancelled, stderr)
		}
		if !strings.Contains(stderr.String(), "cancelled") {
			t.Errorf("stderr %q", stderr)
		}
	case <-time.After(check.Bound):
		t.Fatal("still running long after Ctrl-C")
	}
}

func TestCancelSubcommand(t *testing.T) {
	url := platform(t)
	stdout := newBuffer()
	exit := make(chan int, 1)
	go func() {
		exit <- run(context.Background(), []string{"--nats", url, "--id", "victim", "-c", "import time\nprint('go', flush=True)\ntime.sleep(30)"},
			strings.NewReader(""), stdout, newBuffer())
	}()
	select {
	case <-stdout.wrote:
	case <-time.After(15 * time.Second):
		t.Fatal("no output")
	}
	if got := submit(t, url, "", "cancel", "victim"); got.code != 0 {
		t.Fatalf("cancel: %+v", got)
	}
	select {
	case code := <-exit:
		if code != exitCancelled {
			t.Fatalf("exit %d", code)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("job not cancelled")
	}
	// Cancelling again, or an unknown job, is harmless.
	for _, id := range []string{"victim", "never-existed"} {
		if got := submit(t, url, "", "cancel", id); got.code != 0 {
			t.Errorf("cancel %s: %+v", id, got)
		}
	}
	if got := submit(t, url, "", "cancel", "a.b"); got.code != 2 {
		t.Errorf("cancel of an invalid id: %+v", got)
	}
}

func TestSessionCommands(t *testing.T) {
	url := platform(t)
	steps := []struct {
		args   []string
		code   int
		stdout string
	}{
		{[]string{"--session", "nb", "-c", "x = 42"}, 0, ""},
		{[]string{"--session", "nb", "-c", "print(x * 2)"}, 0, "84\n"},
	}
	for _, s := range steps {
		if got := submit(t, url, "", s.args...); got.code != s.code || (s.stdout != "" && got.stdout != s.stdout) {
			t.Fatalf("%v: %+v", s.args, got)
		}
	}
	snap := filepath.Join(t.TempDir(), "nb.snap")
	if got := submit(t, url, "", "session", "snapshot", "nb", "-o", snap); got.code != 0 {
		t.Fatalf("snapshot: %+v", got)
	}
	// Only the workers' key makes a snapshot restorable.
	if got := submit(t, url, "", "session", "restore", "copy", snap); got.code != 2 || !strings.Contains(got.stderr, "ERYX_SNAPSHOT_KEY") {
		t.Fatalf("restore without the key: %+v", got)
	}
	t.Setenv("ERYX_SNAPSHOT_KEY", testSnapshotKey)
	if got := submit(t, url, "", "session", "restore", "copy", snap); got.code != 0 {
		t.Fatalf("restore: %+v", got)
	}
	if got := submit(t, url, "", "--session", "copy", "-c", "print(x)"); got.stdout != "42\n" {
		t.Fatalf("restored session: %+v", got)
	}
	if got := submit(t, url, "", "session", "list"); !strings.Contains(got.stdout, "nb") || !strings.Contains(got.stdout, "copy") {
		t.Fatalf("list: %+v", got)
	}
	// The common flags may come before the subcommand too.
	if got := submit(t, url, "", "--nats", url, "session", "list"); got.code != 0 || !strings.Contains(got.stdout, "nb") {
		t.Fatalf("list with --nats first: %+v", got)
	}
	if got := submit(t, url, "", "session", "delete", "copy"); got.code != 0 {
		t.Fatalf("delete: %+v", got)
	}
	if got := submit(t, url, "", "--session", "copy", "-c", "print('x' in globals())"); got.stdout != "False\n" {
		t.Fatalf("deleted session still has state: %+v", got)
	}
	if got := submit(t, url, "", "session", "snapshot", "missing"); got.code != 2 {
		t.Fatalf("snapshot of a missing session: %+v", got)
	}
}

func TestPackageUpload(t *testing.T) {
	url := platform(t)
	var zbuf bytes.Buffer
	zw := zip.NewWriter(&zbuf)
	f, _ := zw.Create("greet/__init__.py")
	_, _ = f.Write([]byte("def hello(name):\n    return 'hello ' + name\n"))
	_ = zw.Close()
	file := filepath.Join(t.TempDir(), "greet.zip")
	if err := os.WriteFile(file, zbuf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	if got := submit(t, url, "", "package", "upload", "greet", file); got.code != 0 {
		t.Fatalf("upload: %+v", got)
	}
	if got := submit(t, url, "", "package", "list"); !strings.Contains(got.stdout, "greet") {
		t.Fatalf("list: %+v", got)
	}
	got := submit(t, url, "", "--package", "greet", "-c", "import greet\nprint(greet.hello('eryx'))")
	if got.code != 0 || got.stdout != "hello eryx\n" {
		t.Fatalf("job with the package: %+v", got)
	}
	if got := submit(t, url, "", "-c", "import greet"); got.code != 1 {
		t.Fatalf("package leaked into a job that did not ask for it: %+v", got)
	}
	if got := submit(t, url, "", "package", "upload", "../bad", file); got.code != 2 {
		t.Fatalf("bad name accepted: %+v", got)
	}
}

func TestCallbacksCommand(t *testing.T) {
	url := platform(t)
	got := submit(t, url, "", "callbacks", "--json")
	if got.code != 0 || strings.TrimSpace(got.stdout) != "[]" {
		t.Fatalf("%+v", got)
	}
}

func TestParseInterspersed(t *testing.T) {
	tests := []struct {
		args []string
		pos  []string
		json bool
	}{
		{[]string{"a.py"}, []string{"a.py"}, false},
		{[]string{"a.py", "--json"}, []string{"a.py"}, true},
		{[]string{"--json", "-"}, []string{"-"}, true},
		{[]string{"--", "--json"}, []string{"--json"}, false},
	}
	for _, tt := range tests {
		fs, o := runFlags(&bytes.Buffer{})
		pos, err := parseInterspersed(fs, tt.args)
		if err != nil || strings.Join(pos, " ") != strings.Join(tt.pos, " ") || o.jsonOut != tt.json {
			t.Errorf("%v: pos %v json %v err %v", tt.args, pos, o.jsonOut, err)
		}
	}
}

// --tenant (or ERYX_TENANT) submits, follows and keeps sessions as that
// tenant; the default tenant is "default".
func TestTenantFlag(t *testing.T) {
	url := platform(t)
	if got := submit(t, url, "", "--session", "nb", "-c", "who = 'default'"); got.code != 0 {
		t.Fatalf("default tenant: %+v", got)
	}
	if got := submit(t, url, "", "--tenant", "acme", "--session", "nb", "-c", "print(globals().get('who'))"); got.code != 0 || got.stdout != "None\n" {
		t.Fatalf("acme saw the default tenant's session: %+v", got)
	}
	t.Setenv("ERYX_TENANT", "acme")
	if got := submit(t, url, "", "--json", "--id", "t1", "-c", "print(1)"); got.code != 0 || !strings.Contains(got.stdout, `"tenant": "acme"`) {
		t.Fatalf("ERYX_TENANT: %+v", got)
	}
	if got := submit(t, url, "", "--tenant", "Not.Valid", "-c", "1"); got.code != 2 || !strings.Contains(got.stderr, "invalid tenant") {
		t.Fatalf("invalid tenant: %+v", got)
	}
}

func TestCommonFlagsBeforeTheSubcommand(t *testing.T) {
	tests := []struct {
		args, want []string
	}{
		{[]string{"--nats", "U", "session", "list"}, []string{"session", "list", "--nats", "U"}},
		{[]string{"-nats=U", "--prefix", "p", "cancel", "id1"}, []string{"cancel", "id1", "-nats=U", "--prefix", "p"}},
		{[]string{"--nats", "U", "package", "upload", "n", "--", "-f.zip"}, []string{"package", "upload", "n", "--nats", "U", "--", "-f.zip"}},
		{[]string{"session", "list", "--nats", "U"}, []string{"session", "list", "--nats", "U"}},
		// Runs: a file named like a subcommand after "--", or run flags.
		{[]string{"--nats", "U", "--", "session"}, []string{"--nats", "U", "--", "session"}},
		{[]string{"--nats", "U", "job.py"}, []string{"--nats", "U", "job.py"}},
		{[]string{"--json", "session"}, []string{"--json", "session"}},
		{[]string{"-c", ""}, []string{"-c", ""}},
		{[]string{}, []string{}},
	}
	for _, tt := range tests {
		if got := commonFirst(tt.args); !slices.Equal(got, tt.want) {
			t.Errorf("commonFirst(%q) = %q, want %q", tt.args, got, tt.want)
		}
	}
}
