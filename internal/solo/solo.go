// Package solo runs a complete single-machine eryx inside the process: an
// embedded NATS server with JetStream, a sandbox engine and pool, the
// session store, the callback catalogue and one worker. Tools that must
// work with no infrastructure (eryx-mcp serve without a NATS URL) use it;
// cmd/eryx-worker is the configurable production assembly of the same
// parts.
package solo

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/eryx-dev/eryx/callbacks/catalogue"
	"github.com/eryx-dev/eryx/internal/embednats"
	"github.com/eryx-dev/eryx/jobs"
	"github.com/eryx-dev/eryx/jobs/worker"
	"github.com/eryx-dev/eryx/kvstate"
	"github.com/eryx-dev/eryx/runtime/pool"
	"github.com/eryx-dev/eryx/runtime/sandbox"
)

// Options configure an in-process eryx. Zero values take the worker's
// defaults (30 s and 128 MiB per job, 1 MiB of output, ...).
type Options struct {
	// DataDir keeps JetStream's data (sessions survive a restart when it
	// is kept); empty: a temporary directory removed by Close.
	DataDir string
	// Listen is the embedded server's host:port (default 127.0.0.1:-1, a
	// free loopback port), so that callback services in other processes
	// can attach.
	Listen string
	// Prefix is the subject prefix (default jobs.DefaultPrefix).
	Prefix string
	// Queue is the queue the worker serves (jobs.DefaultQueue).
	Queue string
	// Concurrency is how many jobs run at once (default 2).
	Concurrency int
	// Timeout and MemoryBytes are the default and maximum of every job.
	Timeout     time.Duration
	MemoryBytes uint64
	// RefreshInterval is how often the worker rediscovers callback
	// services (default 5 s: discovery is cheap on one machine, and
	// bridged MCP tools then appear quickly).
	RefreshInterval time.Duration
	// Engine, if set, is used instead of building one (tests share one
	// per binary); Close leaves it open.
	Engine *sandbox.Engine
	Logger *slog.Logger
}

// Solo is a running in-process eryx.
type Solo struct {
	ns      *server.Server
	nc      *nats.Conn
	cleanup []func()

	cancel context.CancelFunc
	done   chan struct{}
	runErr error

	closeOnce sync.Once
}

// Start starts everything and returns once the worker is serving.
func Start(ctx context.Context, opts Options) (_ *Solo, err error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Listen == "" {
		opts.Listen = "127.0.0.1:-1"
	}
	if opts.Prefix == "" {
		opts.Prefix = jobs.DefaultPrefix
	}
	if opts.Concurrency <= 0 {
		opts.Concurrency = 2
	}
	if opts.RefreshInterval <= 0 {
		opts.RefreshInterval = 5 * time.Second
	}
	subjects, err := jobs.NewSubjects(opts.Prefix)
	if err != nil {
		return nil, err
	}
	s := &Solo{done: make(chan struct{})}
	defer func() {
		if err != nil {
			s.runCleanup()
		}
	}()

	dir := opts.DataDir
	if dir == "" {
		if dir, err = os.MkdirTemp("", "eryx-solo-"); err != nil {
			return nil, err
		}
		s.onClose(func() { _ = os.RemoveAll(dir) })
	} else if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("solo: data directory: %w", err)
	}
	if s.ns, err = embednats.Start(embednats.Options{Listen: opts.Listen, StoreDir: dir, ServerName: "eryx-solo"}); err != nil {
		return nil, err
	}
	s.onClose(func() { s.ns.Shutdown(); s.ns.WaitForShutdown() })
	if s.nc, err = nats.Connect(s.ns.ClientURL(), nats.Name("eryx-solo worker")); err != nil {
		return nil, fmt.Errorf("solo: %w", err)
	}
	s.onClose(s.nc.Close)

	engine := opts.Engine
	if engine == nil {
		if engine, err = sandbox.NewEngine(ctx, sandbox.Config{}); err != nil {
			return nil, err
		}
		s.onClose(func() { _ = engine.Close(context.Background()) })
	}
	memory := opts.MemoryBytes
	if memory == 0 {
		memory = sandbox.DefaultMemoryBytes
	}
	sandboxes, err := pool.New(ctx, engine, pool.Config{
		MaxSize: opts.Concurrency * 2,
		MinIdle: 1,
		Limits:  sandbox.Limits{MemoryBytes: memory},
	})
	if err != nil {
		return nil, err
	}
	s.onClose(func() { _ = sandboxes.Close(context.Background()) })

	js, err := jetstream.New(s.nc)
	if err != nil {
		return nil, err
	}
	// Snapshots are tagged like any worker's: with a key kept beside the
	// data, so that sessions survive a restart on the same directory.
	key, _, err := kvstate.KeyFile(filepath.Join(dir, "snapshot.key"))
	if err != nil {
		return nil, err
	}
	store, err := kvstate.Open(ctx, js, kvstate.Config{Bucket: subjects.SessionsBucket(), BlobBucket: subjects.SessionBlobsBucket(), MACKey: key})
	if err != nil {
		return nil, err
	}
	life, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s.cancel = cancel
	cat := catalogue.New(life, s.nc, catalogue.Options{Prefix: opts.Prefix, Logger: opts.Logger, RefreshInterval: opts.RefreshInterval})
	s.onClose(cat.Close)

	w, err := worker.New(ctx, s.nc, sandboxes, worker.Config{
		ID:           "solo",
		Queue:        opts.Queue,
		Subjects:     subjects,
		Concurrency:  opts.Concurrency,
		Policy:       jobs.Policy{Timeout: opts.Timeout, MemoryBytes: memory},
		Sessions:     worker.KVSessions(store),
		Callbacks:    cat,
		DrainTimeout: 5 * time.Second,
		Logger:       opts.Logger,
	})
	if err != nil {
		cancel()
		return nil, err
	}
	go func() {
		defer close(s.done)
		s.runErr = w.Run(life)
	}()
	return s, nil
}

func (s *Solo) onClose(f func()) { s.cleanup = append(s.cleanup, f) }

func (s *Solo) runCleanup() {
	for i := len(s.cleanup) - 1; i >= 0; i-- {
		s.cleanup[i]()
	}
}

// URL is the embedded NATS server's client URL.
func (s *Solo) URL() string { return s.ns.ClientURL() }

// Close drains the worker and stops everything Start started.
func (s *Solo) Close() error {
	var err error
	s.closeOnce.Do(func() {
		s.cancel()
		<-s.done
		if s.runErr != nil && !errors.Is(s.runErr, context.Canceled) {
			err = s.runErr
		}
		s.runCleanup()
	})
	return err
}
