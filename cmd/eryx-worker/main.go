// Command eryx-worker runs eryx jobs from a NATS JetStream queue, each in a
// fresh WebAssembly sandbox. Configuration comes from ERYX_* environment
// variables; `eryx-worker --help` lists them. With no ERYX_NATS_URL it
// starts an embedded NATS server, so one machine works out of the box.
package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/kelseyhightower/envconfig"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"

	"github.com/eryx-dev/eryx/auth"
	"github.com/eryx-dev/eryx/callbacks/catalogue"
	"github.com/eryx-dev/eryx/internal/embednats"
	"github.com/eryx-dev/eryx/jobs"
	"github.com/eryx-dev/eryx/jobs/worker"
	"github.com/eryx-dev/eryx/kvstate"
	"github.com/eryx-dev/eryx/netgate"
	"github.com/eryx-dev/eryx/runtime/assets"
	"github.com/eryx-dev/eryx/runtime/pool"
	"github.com/eryx-dev/eryx/runtime/sandbox"
	"github.com/eryx-dev/eryx/telemetry"
)

const envPrefix = "ERYX"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

// run is the whole program; ctx ending (SIGTERM, Ctrl-C) drains the worker.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	for _, a := range args {
		switch a {
		case "-h", "-help", "--help", "help":
			usage(stdout)
			return 0
		case "-version", "--version", "version":
			return printVersion(stdout, stderr)
		default:
			fmt.Fprintf(stderr, "eryx-worker: unexpected argument %q (configuration is by environment; see --help)\n", a)
			return 2
		}
	}
	var cfg Config
	if err := envconfig.Process(envPrefix, &cfg); err != nil {
		fmt.Fprintln(stderr, "eryx-worker:", err)
		return 2
	}
	if err := cfg.validate(); err != nil {
		fmt.Fprintln(stderr, "eryx-worker:", err)
		return 2
	}
	netPolicy, err := netgate.PolicyFromEnv(os.Getenv)
	if err != nil {
		fmt.Fprintln(stderr, "eryx-worker:", err)
		return 2
	}
	if cfg.secrets, err = netgate.SecretsFromEnv(os.Getenv, os.ReadFile); err != nil {
		fmt.Fprintln(stderr, "eryx-worker:", err)
		return 2
	}
	log := newLogger(stderr, cfg)
	if err := serve(ctx, cfg, netPolicy, log); err != nil {
		log.Error("worker failed", "err", err)
		return 1
	}
	return 0
}

func usage(w io.Writer) {
	fmt.Fprint(w, `eryx-worker runs eryx jobs from NATS JetStream in WebAssembly sandboxes.

Usage: eryx-worker        (configured by the environment)
       eryx-worker --version  (what the embedded runtime was built from)

SIGTERM or Ctrl-C drains: no new jobs, running jobs finish (or go back to the
queue after ERYX_DRAIN_TIMEOUT). See docs/protocol.md for the subjects.

`)
	tw := tabwriter.NewWriter(w, 1, 0, 4, ' ', 0)
	_ = envconfig.Usagef(envPrefix, &Config{}, tw, envconfig.DefaultTableFormat)
	_ = tw.Flush()
}

// printVersion prints what the embedded runtime was built from: the exact
// Debian versions, so that an operator can compare them with the security
// tracker without running a job.
func printVersion(stdout, stderr io.Writer) int {
	info, err := assets.RuntimeInfo()
	if err != nil {
		fmt.Fprintln(stderr, "eryx-worker:", err)
		return 1
	}
	fmt.Fprintf(stdout, "eryx-worker: CPython %s (wasm32-wasi)\n", info.Python)
	tw := tabwriter.NewWriter(stdout, 1, 0, 2, ' ', 0)
	for _, group := range []struct {
		kind string
		pkgs map[string]string
	}{{"source", info.DebianSources}, {"package", info.DebianPackages}} {
		names := make([]string, 0, len(group.pkgs))
		for n := range group.pkgs {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, n := range names {
			fmt.Fprintf(tw, "debian %s\t%s\t%s\n", group.kind, n, group.pkgs[n])
		}
	}
	_ = tw.Flush()
	if len(info.SecurityFiles) > 0 {
		fmt.Fprintf(stdout, "stdlib files from the security update: %s\n", strings.Join(info.SecurityFiles, " "))
	}
	return 0
}

func newLogger(w io.Writer, cfg Config) *slog.Logger {
	var level slog.Level
	if err := level.UnmarshalText([]byte(cfg.LogLevel)); err != nil {
		level = slog.LevelInfo
	}
	opts := &slog.HandlerOptions{Level: level}
	if cfg.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// serve runs the worker until ctx ends, then drains and shuts down.
func serve(ctx context.Context, cfg Config, netPolicy netgate.Policy, log *slog.Logger) error {
	subjects, err := jobs.NewSubjects(cfg.SubjectPrefix)
	if err != nil {
		return err
	}

	url := cfg.NATSURL
	if url == "" {
		ns, err := startEmbedded(cfg, log)
		if err != nil {
			return err
		}
		defer func() {
			ns.Shutdown()
			ns.WaitForShutdown()
		}()
		url = ns.ClientURL()
	}
	nc, err := connect(url, cfg, log)
	if err != nil {
		return err
	}
	defer nc.Close()

	tel, err := telemetry.Setup(ctx, telemetry.Options{ServiceName: "eryx-worker"})
	if err != nil {
		return err
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = tel.Shutdown(sctx)
	}()

	start := time.Now()
	engine, err := sandbox.NewEngine(ctx, sandbox.Config{
		CacheDir: cfg.CacheDir,
		HashSeed: cfg.hashSeed(),
		Image:    cfg.RuntimeImage,
		Limits: sandbox.Limits{
			Timeout:     cfg.ExecTimeout,
			MemoryBytes: uint64(cfg.MemoryLimit),
			OutputBytes: int(cfg.OutputLimit),
			CodeBytes:   int(cfg.MaxCodeBytes),
		},
	})
	if err != nil {
		return err
	}
	defer func() { _ = engine.Close(context.Background()) }()
	est := engine.Stats()
	log.Info("runtime ready", "took", time.Since(start).Round(time.Millisecond), "slot_reset", est.SlotReset)
	if est.SlotResetFallback != "" {
		log.Warn("sandbox slots are rebuilt for every job, not reset in place", "reason", est.SlotResetFallback)
	}

	metrics := telemetry.NewMetrics()
	bounds := telemetry.NewBounds(metrics.Registry())
	// The pool also lends the sandboxes of warm sessions.
	sandboxes, err := pool.New(ctx, engine, pool.Config{
		MaxSize:  cfg.PoolSize + cfg.SessionCache,
		MinIdle:  min(cfg.PoolMinIdle, cfg.PoolSize),
		Limits:   sandbox.Limits{MemoryBytes: uint64(cfg.MemoryLimit)},
		OnCreate: metrics.SandboxCreated,
		OnResetError: func(err error) {
			log.Warn("sandbox slot destroyed: reset failed", "err", err)
		},
	})
	if err != nil {
		return err
	}
	defer func() { _ = sandboxes.Close(context.Background()) }()

	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	snapKey, err := snapshotKey(cfg, log)
	if err != nil {
		return err
	}
	store, err := kvstate.Open(ctx, js, kvstate.Config{
		MACKey:          snapKey,
		Bucket:          subjects.SessionsBucket(),
		BlobBucket:      subjects.SessionBlobsBucket(),
		MaxSnapshotSize: int64(cfg.SnapshotLimit),
		TTL:             cfg.SessionTTL,
		Replicas:        cfg.Replicas,
	})
	if err != nil {
		return err
	}

	gateway, err := netgate.NewGateway(netgate.Config{
		Policy:    netPolicy,
		OnRefusal: func(reason, _ string) { metrics.NetworkRefused(reason) },
	})
	if err != nil {
		return err
	}
	metrics.SetPoolStats(func() telemetry.PoolStats {
		st := sandboxes.Stats()
		return telemetry.PoolStats{Idle: st.Idle, InUse: st.InUse}
	})
	health := telemetry.NewHealth()
	health.SetCheck("nats", func(context.Context) error {
		if !nc.IsConnected() {
			return fmt.Errorf("NATS %s", nc.Status())
		}
		return nil
	})
	// Warm: sandboxes exist (ready ones, or all busy with jobs).
	health.SetCheck("pool", func(context.Context) error {
		if st := sandboxes.Stats(); st.Idle == 0 && st.InUse == 0 {
			return fmt.Errorf("no warm sandbox yet (%d created, %d creation errors)", st.Creations, st.CreateErrors)
		}
		return nil
	})

	wcfg := worker.Config{
		ID:       cfg.WorkerID,
		Queue:    cfg.Queue,
		Subjects: subjects,
		Topology: jobs.Topology{
			DedupWindow:         cfg.DedupWindow,
			EventsMaxAge:        cfg.EventsMaxAge,
			EventsMaxBytes:      int64(cfg.EventsMaxBytes), //nolint:gosec // the parser caps sizes at 2^62
			EventsMaxPerSubject: cfg.EventsPerJob,
			ResultsMaxBytes:     int64(cfg.ResultsMaxBytes), //nolint:gosec // the parser caps sizes at 2^62
			Replicas:            cfg.Replicas,
			MaxQueuedPerTenant:  cfg.MaxQueuedPerTenant,
			Control:             jobs.ControlLimits{MaxMsgs: cfg.ControlMaxMsgs, MaxBytes: int64(cfg.ControlMaxBytes)}, //nolint:gosec // the parser caps sizes at 2^62
			FilesTTL:            cfg.FilesTTL,
			FilesMaxBytes:       int64(cfg.FilesBucketBytes), //nolint:gosec // the parser caps sizes at 2^62
		},
		Policy: jobs.Policy{
			MaxJobBytes:  int(cfg.MaxJobBytes),
			MaxCodeBytes: int(cfg.MaxCodeBytes),
			Timeout:      cfg.ExecTimeout,
			MemoryBytes:  uint64(cfg.MemoryLimit),
			Fuel:         cfg.FuelDefault,
			MaxFuel:      cfg.FuelMax,
			MaxFiles:     cfg.FilesMaxCount,
		},
		Network:       gateway,
		Secrets:       cfg.secrets,
		Concurrency:   cfg.PoolSize,
		OutputBytes:   int(cfg.OutputLimit),
		HostCalls:     cfg.HostCalls,
		HostCallBytes: int(cfg.HostCallBytes),
		TraceEvents:   cfg.TraceEvents,
		TraceBytes:    int(cfg.TraceLimit),
		AckWait:       cfg.AckWait,
		MaxDeliver:    cfg.MaxDeliver,
		DrainTimeout:  cfg.DrainTimeout,
		Sessions:      worker.KVSessions(store),
		SessionCache:  cfg.SessionCache,
		SessionIdle:   cfg.SessionIdle,
		SessionSweep:  sweepEvery(cfg.SessionSweep),
		SnapshotBytes: int(cfg.SnapshotLimit),
		SessionMemory: uint64(cfg.SessionMemory),
		CancelRate:    cfg.CancelRate,
		OnBound:       bounds.Hit,
		Observer:      metrics,
		StartJob:      traceJob(tel, subjects.ConsumerName(cfg.Queue)),
		Logger:        log,

		CallbackInstallMax: cfg.CallbacksInstall,
	}
	if cfg.Quotas {
		wcfg.Quotas = worker.StoreQuotas(js, cfg.SubjectPrefix)
	}
	// Job files (docs/files.md).
	wcfg.FileMaxBytes, wcfg.FilesMaxBytes = int64(cfg.FileMaxBytes), int64(cfg.FilesMaxBytes) //nolint:gosec // the parser caps sizes at 2^62
	wcfg.OutputFilesBytes, wcfg.OutputFiles = int(cfg.OutputFilesBytes), cfg.OutputFilesCount
	if cfg.Callbacks {
		cat := catalogue.New(ctx, nc, catalogue.Options{
			Prefix:        cfg.SubjectPrefix,
			Inject:        tel.Inject,
			Logger:        log,
			MaxPerService: cfg.CallbacksPerService,
			MaxTotal:      cfg.CallbacksTotal,
			MaxInfoBytes:  int(cfg.CallbacksInfoBytes),
			AllowService:  catalogue.AllowServices(splitList(cfg.CallbackServices)),
			OnIgnore:      bounds.Add,
		})
		defer cat.Close()
		wcfg.Callbacks = timedCallbacks{inner: cat, known: cat.Has, observe: metrics.Callback}
	}
	w, err := worker.New(ctx, nc, sandboxes, wcfg)
	if err != nil {
		return err
	}

	if cfg.MetricsListen != "" {
		srv, err := telemetry.Listen(cfg.MetricsListen, telemetry.NewMux(health, metrics))
		if err != nil {
			return err
		}
		go func() { _ = srv.Serve() }()
		defer func() {
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = srv.Shutdown(sctx)
		}()
		log.Info("observability endpoints", "addr", srv.Addr())
	}

	log.Info("serving", "nats", nc.ConnectedUrlRedacted(), "queue", cfg.Queue, "pool", cfg.PoolSize,
		"network", netPolicy.Enabled())
	err = w.Run(ctx)
	// Let the last results and acks reach the server before closing.
	_ = nc.FlushTimeout(5 * time.Second)
	return err
}

func startEmbedded(cfg Config, log *slog.Logger) (*server.Server, error) {
	dir, err := filepath.Abs(cfg.DataDir)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("ERYX_DATA_DIR: %w", err)
	}
	ns, err := embednats.Start(embednats.Options{Listen: cfg.EmbeddedListen, StoreDir: dir, ServerName: cfg.WorkerID, Sync: cfg.EmbeddedSync})
	if err != nil {
		return nil, err
	}
	log.Info("embedded NATS server started", "url", ns.ClientURL(), "data", dir, "sync", cmp.Or(cfg.EmbeddedSync, "default (2m)"))
	return ns, nil
}

func connect(url string, cfg Config, log *slog.Logger) (*nats.Conn, error) {
	opts := []nats.Option{
		nats.Name("eryx-worker " + cfg.WorkerID),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(time.Second),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil { // nil: our own Close
				log.Warn("NATS disconnected", "err", err)
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			log.Info("NATS reconnected", "url", nc.ConnectedUrlRedacted())
		}),
		// Asynchronous errors: a permissions violation (the worker's NATS
		// user lacks a permission it needs) or a slow consumer.
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			subject := ""
			if sub != nil {
				subject = sub.Subject
			}
			log.Warn("NATS error", "err", err, "subscription", subject)
		}),
	}
	if cfg.NATSCreds != "" {
		opts = append(opts, nats.UserCredentials(cfg.NATSCreds))
	}
	opts = append(opts, auth.ConnectOptions(cfg.SubjectPrefix, auth.RoleWorker, cfg.Queue)...)
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		return nil, fmt.Errorf("connecting to NATS at %s: %w", url, err)
	}
	return nc, nil
}

// traceJob continues each job's trace (from the submitter's headers) with
// a process span covering its handling.
func traceJob(tel *telemetry.Telemetry, consumer string) func(context.Context, jetstream.Msg, string) (context.Context, func(jobs.Status)) {
	return func(ctx context.Context, msg jetstream.Msg, id string) (context.Context, func(jobs.Status)) {
		m := telemetry.Message{Subject: msg.Subject(), ID: id, BodySize: len(msg.Data()), ConsumerGroup: consumer, Header: msg.Headers()}
		if meta, err := msg.Metadata(); err == nil {
			m.Enqueued = meta.Timestamp
		}
		ctx, span := tel.StartProcess(ctx, m)
		return ctx, func(status jobs.Status) {
			span.SetAttributes(attribute.String("eryx.job.status", string(status)))
			var err error
			if status == "" || status == jobs.StatusRejected {
				err = errors.New("job not completed: " + string(status))
			}
			telemetry.EndSpan(span, err)
		}
	}
}

// timedCallbacks records every invocation's latency and outcome by name.
// Names come from job code: only those in the catalogue (known) become
// labels, all others are counted as telemetry.UnknownCallback.
type timedCallbacks struct {
	inner   sandbox.Callbacks
	known   func(name string) bool
	observe func(name string, d time.Duration, err error)
}

func (t timedCallbacks) List(ctx context.Context) ([]sandbox.CallbackSpec, error) {
	return t.inner.List(ctx)
}

// ForJob keeps the timing on the tenant's view of the catalogue.
func (t timedCallbacks) ForJob(tenant, job string) sandbox.Callbacks {
	if tc, ok := t.inner.(worker.TenantCallbacks); ok {
		return timedCallbacks{inner: tc.ForJob(tenant, job), known: t.known, observe: t.observe}
	}
	return t
}

func (t timedCallbacks) Invoke(ctx context.Context, name string, args json.RawMessage) (json.RawMessage, error) {
	start := time.Now()
	out, err := t.inner.Invoke(ctx, name, args)
	label := name
	if !t.known(name) {
		label = telemetry.UnknownCallback
	}
	t.observe(label, time.Since(start), err)
	return out, err
}

// sweepEvery maps the setting's "0: never" to the worker's negative.
func sweepEvery(d time.Duration) time.Duration {
	if d == 0 {
		return -1
	}
	return d
}
