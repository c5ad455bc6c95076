// Package worker is eryx's job loop: it pulls jobs from JetStream, runs each
// in a fresh sandbox from the warm pool, and publishes everything a
// submitter needs on the job's subjects (see docs/protocol.md).
package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/eryx-dev/eryx/jobs"
	"github.com/eryx-dev/eryx/netgate"
	"github.com/eryx-dev/eryx/runtime/sandbox"
)

// Sandboxes hands out fresh sandboxes; *pool.Pool implements it. A
// released sandbox is discarded, never given to another job.
type Sandboxes interface {
	Acquire(ctx context.Context) (*sandbox.Sandbox, error)
	Release(sb *sandbox.Sandbox)
}

// Observer receives the worker's measurements; *telemetry.Metrics
// implements it.
type Observer interface {
	JobFinished(status string)
	QueueWait(d time.Duration)
	Execution(d time.Duration)
	JobCancelled()
	DeadLettered()
	// LimitExceeded counts a job stopped for exceeding a host-side budget
	// (sandbox.LimitHostCalls, ...).
	LimitExceeded(limit string)
}

// Worker defaults.
const (
	DefaultAckWait      = 30 * time.Second
	DefaultMaxDeliver   = 3
	DefaultDrainTimeout = 30 * time.Second
	DefaultFetchWait    = 5 * time.Second
	DefaultSessionSweep = time.Hour
)

// Config configures a Worker. Zero values take the defaults.
type Config struct {
	// ID names the worker in results and logs.
	ID string
	// Queue is the queue the worker serves (DefaultQueue).
	Queue    string
	Subjects jobs.Subjects
	// Topology is the streams' retention; the worker creates or updates
	// the streams at start.
	Topology jobs.Topology
	// Policy is what jobs may ask for. Its Timeout and MemoryBytes are
	// the defaults and maxima of every job.
	Policy jobs.Policy
	// Concurrency is how many jobs run at once (the pool size).
	Concurrency int
	// OutputBytes caps a job's stdout+stderr (sandbox default if zero).
	OutputBytes int
	// HostCalls and HostCallBytes cap a job's pending host calls and the
	// bytes they hold; TraceEvents and TraceBytes its trace (sandbox
	// defaults if zero; see sandbox.Limits).
	HostCalls, HostCallBytes int
	TraceEvents, TraceBytes  int
	// AckWait is how long a delivery may go without an ack or a heartbeat
	// before the server gives the job to another worker.
	AckWait time.Duration
	// Heartbeat is how often a running job's delivery is extended with
	// InProgress (AckWait/3 by default).
	Heartbeat time.Duration
	// MaxDeliver is how many failed deliveries a job gets before it goes
	// to the dead-letter stream: deliveries whose worker died or stalled
	// past AckWait. Deliveries a draining worker handed back do not count
	// (see dlq.go).
	MaxDeliver int
	// DrainTimeout is how long Run lets in-flight jobs finish after its
	// context ends before putting them back on the queue.
	DrainTimeout time.Duration
	// FetchWait bounds one pull request (and so how long a stop waits for
	// the pending pull to end).
	FetchWait time.Duration
	// Callbacks is the catalogue jobs can call (nil: none). A job's
	// allow-list narrows it.
	Callbacks sandbox.Callbacks
	// CallbackLimits bound the callbacks of each job.
	CallbackLimits sandbox.CallbackLimits
	// Network is the gateway through which jobs reach the network, under
	// its policy narrowed by each job's request; nil: no network at all.
	Network *netgate.Gateway
	// Secrets are the secrets jobs may ask for; nil: none.
	Secrets *netgate.Secrets
	// Sessions keeps session snapshots so that sessions can move between
	// workers; nil turns sessions off (jobs naming one are rejected).
	Sessions SessionStore
	// SessionCache is how many sessions the worker keeps warm in memory.
	SessionCache int
	// SessionIdle is how long a warm session stays in memory unused.
	SessionIdle time.Duration
	// SessionSweep is how often the worker removes snapshot blobs that no
	// session references (kvstate.Store.Sweep), when Sessions can; the
	// first sweep comes at a random point of the first interval, so a
	// fleet's workers spread out. Default DefaultSessionSweep; negative:
	// never.
	SessionSweep time.Duration
	// SnapshotBytes caps a session snapshot.
	SnapshotBytes int
	// Quotas are the tenants' quotas (StoreQuotas reads eryx-auth's);
	// nil enforces none. max_running, submissions_per_second and
	// exec_seconds_per_hour are counted by each worker on its own.
	Quotas QuotaSource
	// Observer gets metrics; nil for none.
	Observer Observer
	// OnBound, if set, is told each time a host-side bound is hit (one of
	// the Bound* names), for metrics.
	OnBound func(bound string)
	// RememberedCancels bounds the cancels of jobs not running here that
	// the worker remembers (DefaultRememberedCancels).
	RememberedCancels int
	// CancelRate is how many such cancels a second the worker remembers
	// (DefaultCancelRate, burst twice that); cancels of running jobs are
	// always honoured.
	CancelRate float64
	// SessionMemory bounds the linear memory of the warm sessions
	// together (DefaultSessionMemory); the least recently used go first.
	SessionMemory uint64
	// MaxPackageBytes caps a package (sandbox.MaxPackageBytes).
	MaxPackageBytes int64
	// FileMaxBytes and FilesMaxBytes cap one input file of a job and all
	// of them (DefaultFileMaxBytes, DefaultFilesMaxBytes); their number
	// is Policy.MaxFiles. OutputFilesBytes and OutputFiles cap /output
	// (sandbox defaults). FilesStoreTimeout bounds storing a job's output
	// files (DefaultFilesStoreTimeout). See docs/files.md.
	FileMaxBytes, FilesMaxBytes   int64
	OutputFilesBytes, OutputFiles int
	FilesStoreTimeout             time.Duration
	// CallbackInstallMax bounds the callbacks installed as Python globals
	// in a job (DefaultCallbackInstallMax); others stay reachable through
	// invoke(name, **kwargs).
	CallbackInstallMax int
	// StartJob, if set, wraps the handling of each delivery (a trace span
	// continued from the job's headers, say); the returned function is
	// called with the final status ("" when the job was not answered).
	StartJob func(ctx context.Context, msg jetstream.Msg, id string) (context.Context, func(status jobs.Status))
	Logger   *slog.Logger

	// SimulateCrash is a fault-injection hook for tests and drills: when it
	// returns true for a delivery, the worker abandons it exactly as a
	// worker that died at that point would (no ack, no heartbeat, no
	// result), so the server redelivers it after AckWait.
	SimulateCrash func(job *jobs.Job, attempt int) bool
	// SimulateStall is a fault-injection hook too: when it returns true
	// for a delivery, the worker runs the job without heartbeats (as a
	// worker cut off from its NATS server would), then abandons it
	// without a result or an ack.
	SimulateStall func(job *jobs.Job, attempt int) bool
}

func (c Config) withDefaults() Config {
	if c.Queue == "" {
		c.Queue = jobs.DefaultQueue
	}
	if c.ID == "" {
		c.ID = "worker"
	}
	if c.Concurrency <= 0 {
		c.Concurrency = 1
	}
	if c.AckWait <= 0 {
		c.AckWait = DefaultAckWait
	}
	if c.Heartbeat <= 0 || c.Heartbeat >= c.AckWait {
		c.Heartbeat = c.AckWait / 3
	}
	if c.MaxDeliver <= 0 {
		c.MaxDeliver = DefaultMaxDeliver
	}
	if c.DrainTimeout <= 0 {
		c.DrainTimeout = DefaultDrainTimeout
	}
	if c.FetchWait <= 0 {
		c.FetchWait = DefaultFetchWait
	}
	if c.Policy.Timeout <= 0 {
		c.Policy.Timeout = sandbox.DefaultTimeout
	}
	if c.Policy.MemoryBytes == 0 {
		c.Policy.MemoryBytes = sandbox.DefaultMemoryBytes
	}
	if c.Policy.MaxCodeBytes <= 0 {
		c.Policy.MaxCodeBytes = sandbox.DefaultCodeBytes
	}
	if c.Policy.MinMemoryBytes == 0 {
		c.Policy.MinMemoryBytes = 32 << 20
	}
	if c.SessionCache <= 0 {
		c.SessionCache = 64
	}
	if c.SessionIdle <= 0 {
		c.SessionIdle = 10 * time.Minute
	}
	if c.SessionSweep == 0 {
		c.SessionSweep = DefaultSessionSweep
	}
	if c.SnapshotBytes <= 0 {
		c.SnapshotBytes = sandbox.DefaultSnapshotBytes
	}
	if c.RememberedCancels <= 0 {
		c.RememberedCancels = DefaultRememberedCancels
	}
	if c.CancelRate <= 0 {
		c.CancelRate = DefaultCancelRate
	}
	if c.SessionMemory == 0 {
		c.SessionMemory = DefaultSessionMemory
	}
	if c.MaxPackageBytes <= 0 || c.MaxPackageBytes > sandbox.MaxPackageBytes {
		c.MaxPackageBytes = sandbox.MaxPackageBytes
	}
	if c.CallbackInstallMax <= 0 {
		c.CallbackInstallMax = DefaultCallbackInstallMax
	}
	if c.FileMaxBytes <= 0 {
		c.FileMaxBytes = DefaultFileMaxBytes
	}
	if c.FilesMaxBytes <= 0 {
		c.FilesMaxBytes = DefaultFilesMaxBytes
	}
	if c.Policy.MaxFiles <= 0 {
		c.Policy.MaxFiles = jobs.DefaultMaxFiles
	}
	if c.OutputFilesBytes <= 0 {
		c.OutputFilesBytes = sandbox.DefaultOutputFilesBytes
	}
	if c.OutputFiles <= 0 {
		c.OutputFiles = sandbox.DefaultOutputFiles
	}
	if c.FilesStoreTimeout <= 0 {
		c.FilesStoreTimeout = DefaultFilesStoreTimeout
	}
	c.Policy.Sessions = c.Sessions != nil
	c.Policy.Trace = true
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	c.Topology.Subjects = c.Subjects
	return c
}

// Worker runs jobs from one queue. Several workers, in one process or
// many, share a queue through one durable pull consumer.
type Worker struct {
	cfg       Config
	nc        *nats.Conn
	js        jetstream.JetStream
	sandboxes Sandboxes
	log       *slog.Logger

	sched    *scheduler
	quotas   *quotas // nil: no tenant quotas
	jobs     jetstream.Stream
	events   jetstream.Stream
	results  jetstream.Stream
	control  jetstream.Stream
	packages jetstream.ObjectStore
	files    *filesBuckets      // each tenant's files bucket, made on first use
	drainsKV jetstream.KeyValue // handed-back deliveries (dlq.go)

	// held are the stream sequences of the jobs this worker is handling:
	// a second delivery of one of them is not run, nor acked.
	held *heldSet

	cancels  *cancelRegistry
	pkgs     *packageCache
	sessions *sessionCache

	mu      sync.Mutex
	running bool
}

// New prepares a worker: it creates or updates the streams and the
// queue's consumer. Run starts it.
func New(ctx context.Context, nc *nats.Conn, sandboxes Sandboxes, cfg Config) (*Worker, error) {
	cfg = cfg.withDefaults()
	if !jobs.ValidToken(cfg.Queue) {
		return nil, fmt.Errorf("worker: invalid queue name %q", cfg.Queue)
	}
	if cfg.Policy.MaxJobBytes <= 0 || cfg.Policy.MaxJobBytes > int(nc.MaxPayload()) {
		cfg.Policy.MaxJobBytes = int(nc.MaxPayload())
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	w := &Worker{
		cfg: cfg, nc: nc, js: js, sandboxes: sandboxes,
		log:     cfg.Logger.With("worker", cfg.ID, "queue", cfg.Queue),
		cancels: newCancelRegistry(cfg.RememberedCancels, cfg.CancelRate, 0),
		held:    newHeldSet(),
	}
	if err := cfg.Topology.EnsureStreams(ctx, js); err != nil {
		return nil, err
	}
	// Jobs queued under protocol v1 subjects match no v2 consumer: they
	// are the default tenant's (v1 had no other).
	moved, err := cfg.Topology.MigrateV1Jobs(ctx, js, 0)
	if err != nil {
		return nil, fmt.Errorf("worker: %w", err)
	}
	if moved > 0 {
		w.log.Warn("moved jobs queued under protocol v1 subjects to the default tenant", "jobs", moved)
	}
	s := cfg.Subjects
	if w.jobs, err = js.Stream(ctx, s.JobsStream()); err != nil {
		return nil, err
	}
	if w.events, err = js.Stream(ctx, s.EventsStream()); err != nil {
		return nil, err
	}
	if w.results, err = js.Stream(ctx, s.ResultsStream()); err != nil {
		return nil, err
	}
	if w.control, err = js.Stream(ctx, s.ControlStream()); err != nil {
		return nil, err
	}
	if w.packages, err = js.ObjectStore(ctx, s.PackagesBucket()); err != nil {
		return nil, err
	}
	w.files = &filesBuckets{topo: cfg.Topology, js: js, open: map[string]jetstream.ObjectStore{}}
	// The default tenant's bucket now: a deployment without eryx-admin
	// has no "tenant add" to make it, and clients cannot.
	if _, err := w.files.get(ctx, jobs.DefaultTenant); err != nil {
		return nil, err
	}
	if w.drainsKV, err = js.KeyValue(ctx, s.DrainsBucket()); err != nil {
		return nil, err
	}
	w.pkgs = newPackageCache(w.packages, cfg.MaxPackageBytes)
	w.pkgs.onTooLarge = func() { w.bound(BoundPackageBytes) }
	w.sessions = newSessionCache(sandboxes, cfg.SessionCache, cfg.SessionIdle, cfg.SessionMemory)
	w.sessions.onEvict = func() { w.bound(BoundSessionMemory) }
	// One consumer per tenant (created as tenants show up), taken in turn.
	if err := dropLegacyConsumers(ctx, js, s, cfg.Queue, w.log); err != nil {
		return nil, err
	}
	if cfg.Quotas != nil {
		w.quotas = newQuotas(cfg.Quotas, w.log)
	}
	w.sched = newScheduler(w, w.maxRunning)
	return w, nil
}

// ID returns the worker's id.
func (w *Worker) ID() string { return w.cfg.ID }

// Run serves jobs until ctx ends, then drains: it stops fetching, lets
// running jobs finish for up to DrainTimeout, and puts the rest back on
// the queue. It returns nil after a drain, or the error that stopped it
// (a closed connection).
func (w *Worker) Run(ctx context.Context) error {
	w.mu.Lock()
	if w.running {
		w.mu.Unlock()
		return errors.New("worker: already running")
	}
	w.running = true
	w.mu.Unlock()

	s := w.cfg.Subjects
	cancelSub, err := w.nc.Subscribe(s.AllCancels(), w.onCancel)
	if err != nil {
		return err
	}
	defer func() { _ = cancelSub.Unsubscribe() }()
	// A flood must not queue without bound in the client: past these, the
	// client drops cancels (the control stream keeps them).
	if err := cancelSub.SetPendingLimits(cancelPendingMsgs, cancelPendingBytes); err != nil {
		return err
	}
	// Every job published on the queue rings the scheduler; the job
	// itself is pulled from its tenant's consumer.
	bell, err := w.nc.Subscribe(s.QueueJobs(w.cfg.Queue), w.sched.onDoorbell)
	if err != nil {
		return err
	}
	defer func() { _ = bell.Unsubscribe() }()
	if err := bell.SetPendingLimits(doorbellPendingMsgs, doorbellPendingBytes); err != nil {
		return err
	}

	// Jobs outlive Run's context: draining is decided here, not by it.
	jobCtx, stopJobs := context.WithCancelCause(context.WithoutCancel(ctx))
	defer stopJobs(errDraining)
	loopCtx, stopLoops := context.WithCancelCause(ctx)
	defer stopLoops(nil)

	// One pull loop per slot, each with at most one job: a worker never
	// holds a job it has no sandbox for, where another worker could run it.
	var loops sync.WaitGroup
	for range w.cfg.Concurrency {
		loops.Add(1)
		go func() {
			defer loops.Done()
			if err := w.slotLoop(loopCtx, jobCtx); errors.Is(err, errConnLost) {
				stopLoops(errConnLost)
			}
		}()
	}
	go w.sessions.janitor(loopCtx)
	if sw, ok := w.cfg.Sessions.(sweeper); ok && w.cfg.SessionSweep > 0 {
		go w.sweepLoop(loopCtx, sw)
	}
	go w.sched.refreshLoop(loopCtx, w.log)
	w.log.Info("worker started", "concurrency", w.cfg.Concurrency)
	<-loopCtx.Done()
	cause := context.Cause(loopCtx)
	w.log.Info("worker draining", "reason", cause)

	done := make(chan struct{})
	go func() { loops.Wait(); close(done) }()
	if errors.Is(cause, errConnLost) {
		// Nothing can be reported or acked any more: stop at once, and
		// let the server redeliver after AckWait.
		w.cancels.stopAll(errConnLost)
	} else {
		select {
		case <-done:
		case <-time.After(w.cfg.DrainTimeout):
			w.log.Warn("drain timeout: putting running jobs back on the queue")
			w.cancels.stopAll(errDraining)
		}
	}
	<-done
	w.sessions.closeAll()
	w.log.Info("worker stopped")
	if errors.Is(cause, errConnLost) {
		return cause
	}
	return nil
}

// slotLoop pulls one job at a time, from the tenants in turn, and runs
// it, until ctx ends.
func (w *Worker) slotLoop(ctx, jobCtx context.Context) error {
	for ctx.Err() == nil {
		tq, err := w.sched.pick(ctx)
		if err != nil {
			return nil //nolint:nilerr // stopping is not an error of the loop
		}
		msg, err := w.sched.fetch(ctx, tq)
		switch {
		case w.nc.IsClosed():
			w.sched.release(tq, false)
			return errConnLost
		case err != nil:
			w.sched.release(tq, false)
			w.log.Warn("fetch failed", "tenant", tq.name, "err", err)
			select {
			case <-time.After(500 * time.Millisecond):
			case <-ctx.Done():
			}
			continue
		case msg == nil:
			w.sched.release(tq, true)
			continue
		case ctx.Err() != nil:
			// Stopping: the job goes straight back to the queue, and
			// the delivery does not count towards MaxDeliver.
			w.handBack(jobCtx, newDelivery(msg, w.log), "worker stopping")
			w.sched.release(tq, false)
			return nil //nolint:nilerr // stopping is not an error of the loop
		}
		started := time.Now()
		w.handle(jobCtx, msg)
		if w.quotas != nil {
			// The slot's time is what the tenant used of the worker.
			w.quotas.charge(tq.name, time.Since(started), time.Now())
		}
		w.sched.release(tq, false)
	}
	return nil
}

// onCancel handles <prefix>.t.<tenant>.cancel.<id>: the tenant of the
// subject scopes the id, so a tenant can only cancel its own jobs.
func (w *Worker) onCancel(m *nats.Msg) {
	tenant, id, ok := w.cfg.Subjects.ParseCancel(m.Subject)
	if !ok {
		return
	}
	switch w.cancels.cancel(jobKey(tenant, id)) {
	case cancelStopped:
		w.log.Info("cancelling running job", "job", id)
	case cancelDropped:
		w.bound(BoundCancelRate)
		// Logged at the 1st, 2nd, 4th, 8th... drop: a flood gets a few
		// lines, not one per message.
		if _, n := w.cancels.stats(); n&(n-1) == 0 {
			w.log.Warn("cancel flood: cancels of jobs not running here are over the rate limit; only the control stream keeps them",
				"limit_per_second", w.cfg.CancelRate, "dropped_total", n, "last", id, "tenant", tenant)
		}
	case cancelRemembered:
	}
}

// jobKey identifies a job on this worker: ids are only unique within a
// tenant. Neither part contains a '/'.
func jobKey(tenant, id string) string { return tenant + "/" + id }
