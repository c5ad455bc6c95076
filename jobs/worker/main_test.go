package worker_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/eryx-dev/eryx/internal/testenv"
	"github.com/eryx-dev/eryx/jobs"
	"github.com/eryx-dev/eryx/jobs/worker"
	"github.com/eryx-dev/eryx/runtime/pool"
	"github.com/eryx-dev/eryx/runtime/sandbox"
)

// engine is shared by every test: it takes a second or two to build, and
// one per process is also what the worker does.
var engine *sandbox.Engine

func TestMain(m *testing.M) { testenv.Main(m, "jobs", &engine) }

// startServer starts a real NATS server with JetStream for one test.
func startServer(t *testing.T) string {
	t.Helper()
	return testenv.NATS(t)
}

func connect(t *testing.T, url string) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(url, nats.MaxReconnects(-1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// testConfig is a worker configuration with short timers.
func testConfig(id string) worker.Config {
	return worker.Config{
		ID:           id,
		Concurrency:  2,
		AckWait:      2 * time.Second,
		Heartbeat:    300 * time.Millisecond,
		DrainTimeout: 5 * time.Second,
		FetchWait:    time.Second,
		Policy: jobs.Policy{
			Timeout:     10 * time.Second,
			MemoryBytes: 128 << 20,
			MaxJobBytes: 64 << 10,
		},
		Logger: testLogger(),
	}
}

func testLogger() *slog.Logger {
	if os.Getenv("ERYX_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return nil
}

// runningWorker is a worker started by a test.
type runningWorker struct {
	*worker.Worker
	stop func() error // drains and waits
	wait func() error // waits for Run to return by itself
}

// startWorker creates and runs a worker until the test ends or stop.
func startWorker(t *testing.T, nc *nats.Conn, cfg worker.Config) *runningWorker {
	t.Helper()
	w := newWorker(t, nc, cfg)
	return run(t, w)
}

func newWorker(t *testing.T, nc *nats.Conn, cfg worker.Config) *worker.Worker {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	p, err := pool.New(ctx, engine, pool.Config{
		MaxSize: cfg.Concurrency + 4,
		MinIdle: cfg.Concurrency,
		Limits:  sandbox.Limits{MemoryBytes: cfg.Policy.MemoryBytes},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close(context.Background()) })
	w, err := worker.New(ctx, nc, p, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return w
}

func run(t *testing.T, w *worker.Worker) *runningWorker {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	var err error
	go func() { err = w.Run(ctx); close(done) }()
	wait := func() error {
		select {
		case <-done:
			return err
		case <-time.After(30 * time.Second):
			return fmt.Errorf("worker %s did not stop", w.ID())
		}
	}
	stop := func() error { cancel(); return wait() }
	t.Cleanup(func() { _ = stop() })
	return &runningWorker{Worker: w, stop: stop, wait: wait}
}

func newClient(t *testing.T, nc *nats.Conn) *jobs.Client {
	t.Helper()
	c, err := jobs.NewClient(nc, jobs.Subjects{})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// output collects a job's live output.
type output struct {
	mu     sync.Mutex
	stdout strings.Builder
	stderr strings.Builder
	first  chan struct{} // closed at the first output
	once   sync.Once
}

func newOutput() *output { return &output{first: make(chan struct{})} }

func (o *output) handlers() jobs.Handlers {
	return jobs.Handlers{Output: func(kind jobs.EventKind, data []byte) {
		o.mu.Lock()
		if kind == jobs.EventStderr {
			o.stderr.Write(data)
		} else {
			o.stdout.Write(data)
		}
		o.mu.Unlock()
		o.once.Do(func() { close(o.first) })
	}}
}

func (o *output) String() (string, string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.stdout.String(), o.stderr.String()
}

func waitFirstOutput(t *testing.T, o *output) {
	t.Helper()
	select {
	case <-o.first:
	case <-time.After(15 * time.Second):
		t.Fatal("no output within 15s")
	}
}

// runJob runs a job through the client with a deadline.
func runJob(t *testing.T, c *jobs.Client, job *jobs.Job, h jobs.Handlers) *jobs.Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := c.Run(ctx, "", job, h)
	if err != nil {
		t.Fatalf("job %s: %v", job.ID, err)
	}
	return res
}

// waitResult waits for an already submitted job's result.
func waitResult(t *testing.T, c *jobs.Client, id string) *jobs.Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	w, err := c.Watch(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	res, err := w.Wait(ctx, jobs.Handlers{})
	if err != nil {
		t.Fatalf("job %s: %v", id, err)
	}
	return res
}
