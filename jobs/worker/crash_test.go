package worker_test

import (
	"bytes"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"github.com/eryx-dev/eryx/jobs"
)

// logBuffer collects a logger's output for a test to read.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// A C stack overflow (the recursion limit raised, then a deeply nested
// repr) kills the interpreter: a wasm trap. The job's result says so, the
// worker's log says why and for which job, and the worker keeps serving.
func TestGuestCrashIsLoggedWithItsCause(t *testing.T) {
	const crash = "import sys\nsys.setrecursionlimit(10**6)\nl = []\nfor i in range(10**5):\n    l = [l]\nrepr(l)"
	nc := connect(t, startServer(t))
	var logs logBuffer
	cfg := sessionConfig(t, nc, "w1")
	cfg.Logger = slog.New(slog.NewJSONHandler(&logs, nil))
	startWorker(t, nc, cfg)
	c := newClient(t, nc)

	for _, job := range []jobs.Job{
		{ID: "crash-fresh", Code: crash},
		{ID: "crash-session", Session: "s1", Code: crash},
	} {
		res := runJob(t, c, &job, jobs.Handlers{})
		if res.Status != jobs.StatusError || res.Error == nil || res.Error.Type != "SandboxCrashed" {
			t.Fatalf("%s: status %s error %+v, want a SandboxCrashed error", job.ID, res.Status, res.Error)
		}
		var line string
		for _, l := range strings.Split(logs.String(), "\n") {
			if strings.Contains(l, `"msg":"guest crashed"`) && strings.Contains(l, `"job":"`+job.ID+`"`) {
				line = l
			}
		}
		if !strings.Contains(line, `"level":"ERROR"`) || !strings.Contains(line, "out of bounds memory access") ||
			!strings.Contains(line, "wasm stack trace") {
			t.Fatalf("%s: no error log with the crash's cause and stack; log:\n%s", job.ID, logs.String())
		}
	}
	res := runJob(t, c, &jobs.Job{Code: "print('fine')"}, jobs.Handlers{})
	if res.Status != jobs.StatusOK || res.Stdout != "fine\n" {
		t.Fatalf("after the crashes: %s %q %+v", res.Status, res.Stdout, res.Error)
	}
}
