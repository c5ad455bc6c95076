// Package e2e runs the real binaries, eryx-worker and eryx-submit, as
// separate processes against a real NATS server: what a user runs, killed
// the way an operating system kills.
package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/eryx-dev/eryx/internal/embednats"
	"github.com/eryx-dev/eryx/jobs"
)

var bin string // directory of the built binaries

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "eryx-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	bin = dir
	build := exec.Command("go", "build", "-o", dir, "../cmd/eryx-worker", "../cmd/eryx-submit")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "e2e: building the binaries:", err)
		os.Exit(1)
	}
	code := m.Run()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

func startNATS(t *testing.T) string {
	t.Helper()
	ns, err := embednats.Start(embednats.Options{Listen: "127.0.0.1:-1", StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ns.Shutdown)
	return ns.ClientURL()
}

// syncBuffer collects a process's output.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type workerProc struct {
	cmd    *exec.Cmd
	logs   *syncBuffer
	exited chan struct{} // closed when the process is gone
	err    error         // its exit status, once exited is closed
}

// wait waits up to d for the process to exit.
func (w *workerProc) wait(d time.Duration) (error, bool) {
	select {
	case <-w.exited:
		return w.err, true
	case <-time.After(d):
		return nil, false
	}
}

// startWorker runs eryx-worker with env added to the test's environment.
func startWorker(t *testing.T, url, id string, env ...string) *workerProc {
	t.Helper()
	cmd := exec.Command(filepath.Join(bin, "eryx-worker"))
	cmd.Env = append(os.Environ(),
		"ERYX_NATS_URL="+url, "ERYX_WORKER_ID="+id, "ERYX_POOL_SIZE=1",
		"ERYX_ACK_WAIT=2s", "ERYX_CALLBACKS=false", "ERYX_LOG_LEVEL=info")
	cmd.Env = append(cmd.Env, env...)
	logs := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w := &workerProc{cmd: cmd, logs: logs, exited: make(chan struct{})}
	go func() { w.err = cmd.Wait(); close(w.exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-w.exited
		if t.Failed() {
			t.Logf("worker %s logs:\n%s", id, logs.String())
		}
	})
	// Ready when it logs that it serves.
	deadline := time.Now().Add(60 * time.Second)
	for !strings.Contains(logs.String(), "worker started") {
		if time.Now().After(deadline) {
			t.Fatalf("worker %s not ready:\n%s", id, logs.String())
		}
		if err, exited := w.wait(20 * time.Millisecond); exited {
			t.Fatalf("worker %s exited: %v\n%s", id, err, logs.String())
		}
	}
	return w
}

// submit runs the eryx-submit binary.
func submit(t *testing.T, url string, args ...string) (int, string, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(bin, "eryx-submit"), append(args, "--nats", url)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var exit *exec.ExitError
	switch {
	case err == nil:
		return 0, stdout.String(), stderr.String()
	case errors.As(err, &exit):
		return exit.ExitCode(), stdout.String(), stderr.String()
	}
	t.Fatal(err)
	return 0, "", ""
}

func TestBinaries(t *testing.T) {
	url := startNATS(t)
	startWorker(t, url, "solo")

	tests := []struct {
		args   []string
		code   int
		stdout string
	}{
		{[]string{"-c", "print('hello')"}, 0, "hello\n"},
		{[]string{"-c", "1/0"}, 1, ""},
		{[]string{"--timeout", "300ms", "-c", "while True: pass"}, 124, ""},
		{[]string{"--memory", "100000", "-c", "1"}, 2, ""},
	}
	for _, tt := range tests {
		code, stdout, stderr := submit(t, url, tt.args...)
		if code != tt.code || (tt.stdout != "" && stdout != tt.stdout) {
			t.Errorf("%v: exit %d stdout %q stderr %q", tt.args, code, stdout, stderr)
		}
	}
}

func TestCtrlCOnTheSubmitter(t *testing.T) {
	url := startNATS(t)
	startWorker(t, url, "solo")
	cmd := exec.Command(filepath.Join(bin, "eryx-submit"), "--nats", url,
		"-c", "import time\nprint('running', flush=True)\ntime.sleep(60)")
	stdout, stderr := &syncBuffer{}, &syncBuffer{}
	cmd.Stdout, cmd.Stderr = stdout, stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(stdout.String(), "running") {
		if time.Now().After(deadline) {
			t.Fatalf("no output; stderr %s", stderr)
		}
		time.Sleep(20 * time.Millisecond)
	}
	_ = cmd.Process.Signal(os.Interrupt)
	err := cmd.Wait()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 130 {
		t.Fatalf("exit %v, want 130; stderr %s", err, stderr)
	}
	if !strings.Contains(stderr.String(), "cancelled") {
		t.Errorf("stderr %q", stderr)
	}
}

// TestWorkerSIGKILLedMidJob kills a worker process outright while it runs
// a job: another worker process finishes the job after the ack wait.
func TestWorkerSIGKILLedMidJob(t *testing.T) {
	url := startNATS(t)
	a := startWorker(t, url, "a")

	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	client, err := jobs.NewClient(nc, jobs.Subjects{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	watch, err := client.Watch(ctx, "doomed")
	if err != nil {
		t.Fatal(err)
	}
	defer watch.Stop()
	if _, err := client.Submit(ctx, "", &jobs.Job{ID: "doomed",
		Code: "import time\nprint('started', flush=True)\ntime.sleep(1)\nprint('finished')"}); err != nil {
		t.Fatal(err)
	}
	started := make(chan struct{})
	var once sync.Once
	resc := make(chan *jobs.Result, 1)
	go func() {
		res, err := watch.Wait(ctx, jobs.Handlers{Output: func(jobs.EventKind, []byte) { once.Do(func() { close(started) }) }})
		if err != nil {
			t.Error(err)
		}
		resc <- res
	}()
	select {
	case <-started:
	case <-time.After(30 * time.Second):
		t.Fatal("the job did not start")
	}
	if err := a.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_, _ = a.wait(10 * time.Second)
	startWorker(t, url, "b")

	select {
	case res := <-resc:
		if res == nil || res.Status != jobs.StatusOK || res.Worker != "b" || res.Attempt != 2 || res.Stdout != "started\nfinished\n" {
			t.Fatalf("%+v", res)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no result after the kill")
	}
}

// TestSIGTERMDrains stops a worker process with SIGTERM during a job: the
// job finishes and the worker exits 0.
func TestSIGTERMDrains(t *testing.T) {
	url := startNATS(t)
	w := startWorker(t, url, "draining")
	sub := exec.Command(filepath.Join(bin, "eryx-submit"), "--nats", url,
		"-c", "import time\nprint('a', flush=True)\ntime.sleep(1)\nprint('b')")
	stdout := &syncBuffer{}
	sub.Stdout, sub.Stderr = stdout, os.Stderr
	if err := sub.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(stdout.String(), "a") { // the job is running
		if time.Now().After(deadline) {
			t.Fatal("the job did not start")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := w.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	err, exited := w.wait(30 * time.Second)
	if !exited {
		t.Fatal("worker did not drain")
	}
	if err != nil {
		t.Fatalf("worker exit: %v\n%s", err, w.logs.String())
	}
	if err := sub.Wait(); err != nil || stdout.String() != "a\nb\n" {
		t.Fatalf("job across the drain: %v, stdout %q", err, stdout.String())
	}
}
