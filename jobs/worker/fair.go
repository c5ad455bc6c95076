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
)

// Fair share. The jobs of a queue sit on one subject per tenant
// (<prefix>.jobs.<queue>.<tenant>) of a work-queue stream, and every
// tenant subject has a durable pull consumer of its own, shared by the
// queue's workers (a work-queue stream allows one consumer per subject:
// filters must not overlap, so there is no catch-all consumer any more).
// Each free slot takes the next tenant with work in round-robin order and
// pulls one job from that tenant's consumer: a tenant with 10,000 queued
// jobs gets one slot in turn like a tenant with one.
//
// Tenants with work are learnt two ways: a core subscription on the
// queue's job subjects (a doorbell: the job itself is pulled from the
// consumer, the copy is dropped) and, every tenantRefresh, the jobs
// stream's per-subject counts, which also find jobs published while the
// worker was away and jobs put back for redelivery.

// Timers of the scheduler.
const (
	// tenantRefresh is how often the jobs stream is asked which tenants
	// have queued jobs.
	tenantRefresh = time.Second
	// tenantFetchWait bounds the pull of a tenant believed to have work:
	// long enough to let a job whose doorbell overtook its storage
	// arrive, short enough that a wrong belief costs little.
	tenantFetchWait = 250 * time.Millisecond
	// tenantForget is how long a tenant without work and without running
	// jobs is remembered.
	tenantForget = 10 * time.Minute
	// tenantConsumerIdle is when the server removes a tenant's consumer
	// nobody pulled from; far beyond any job's run time, so never under
	// a running job.
	tenantConsumerIdle = 24 * time.Hour
	// doorbellPending bounds the doorbell's client-side backlog; past it
	// doorbells are dropped (the refresh finds their tenants).
	doorbellPendingMsgs  = 4096
	doorbellPendingBytes = 16 << 20
)

// tenantQueue is one tenant's jobs of the worker's queue.
type tenantQueue struct {
	name    string
	work    bool // it may have jobs waiting
	running int  // this worker's slots pulling or running its jobs
	seen    time.Time

	consMu sync.Mutex
	cons   jetstream.Consumer
}

// scheduler hands the slots tenants in round-robin order.
type scheduler struct {
	w *Worker
	// maxRunning is how many jobs of tenant may run at once on this
	// worker (its quota).
	maxRunning func(tenant string) int

	mu      sync.Mutex
	tenants map[string]*tenantQueue
	order   []string // the round-robin ring
	next    int
	changed chan struct{} // closed (and replaced) when a slot may have work
}

func newScheduler(w *Worker, maxRunning func(string) int) *scheduler {
	return &scheduler{w: w, maxRunning: maxRunning, tenants: map[string]*tenantQueue{}, changed: make(chan struct{})}
}

// notify wakes the slots waiting in pick. Called with s.mu held.
func (s *scheduler) notify() {
	close(s.changed)
	s.changed = make(chan struct{})
}

// mark records that tenant may have work.
func (s *scheduler) mark(tenant string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	tq := s.tenants[tenant]
	if tq == nil {
		tq = &tenantQueue{name: tenant}
		s.tenants[tenant] = tq
		s.order = append(s.order, tenant)
	}
	tq.seen = time.Now()
	if !tq.work {
		tq.work = true
		s.notify()
	}
}

// pick waits for the next tenant, in round-robin order, that has work and
// is under its running quota, and books a slot for it.
func (s *scheduler) pick(ctx context.Context) (*tenantQueue, error) {
	for {
		s.mu.Lock()
		n := len(s.order)
		for i := range n {
			idx := (s.next + i) % n
			tq := s.tenants[s.order[idx]]
			if !tq.work || tq.running >= s.maxRunning(tq.name) {
				continue
			}
			tq.running++
			s.next = (idx + 1) % n
			s.mu.Unlock()
			return tq, nil
		}
		ch := s.changed
		s.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// release gives back the slot pick booked; empty says the tenant's
// consumer had no job for it.
func (s *scheduler) release(tq *tenantQueue, empty bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	tq.running--
	if empty {
		tq.work = false
	}
	// A slot is free (and the tenant may be under its quota again).
	s.notify()
}

// consumer returns the tenant's consumer, creating it if need be.
func (s *scheduler) consumer(ctx context.Context, tq *tenantQueue) (jetstream.Consumer, error) {
	tq.consMu.Lock()
	defer tq.consMu.Unlock()
	if tq.cons != nil {
		return tq.cons, nil
	}
	cfg := s.w.cfg
	sub := cfg.Subjects
	cons, err := s.w.js.CreateOrUpdateConsumer(ctx, sub.JobsStream(), jetstream.ConsumerConfig{
		Durable:       sub.TenantConsumerName(cfg.Queue, tq.name),
		Description:   "eryx workers of queue " + cfg.Queue + ", jobs of tenant " + tq.name,
		FilterSubject: sub.Jobs(cfg.Queue, tq.name),
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       cfg.AckWait,
		// Unlimited: the worker keeps the delivery budget itself, so
		// that drains do not spend it (dlq.go).
		MaxDeliver: -1,
		// Workers pull exactly as many jobs as they have free slots, so
		// the server-side bound only has to stay out of the way.
		MaxAckPending:     -1,
		MaxWaiting:        512,
		InactiveThreshold: tenantConsumerIdle,
	})
	if err != nil {
		return nil, fmt.Errorf("worker: consumer of tenant %s: %w", tq.name, err)
	}
	tq.cons = cons
	return cons, nil
}

// forgetConsumer drops a consumer the server no longer has.
func (tq *tenantQueue) forgetConsumer() {
	tq.consMu.Lock()
	tq.cons = nil
	tq.consMu.Unlock()
}

// fetch pulls one job of tq; nil when there was none.
func (s *scheduler) fetch(ctx context.Context, tq *tenantQueue) (jetstream.Msg, error) {
	cons, err := s.consumer(ctx, tq)
	if err != nil {
		return nil, err
	}
	wait := min(tenantFetchWait, s.w.cfg.FetchWait)
	fctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	batch, err := cons.Fetch(1, jetstream.FetchContext(fctx))
	if err != nil {
		if errors.Is(err, jetstream.ErrConsumerNotFound) {
			tq.forgetConsumer()
		}
		return nil, err
	}
	for msg := range batch.Messages() {
		return msg, nil
	}
	if err := batch.Error(); err != nil && !errors.Is(err, context.DeadlineExceeded) &&
		!errors.Is(err, context.Canceled) && !errors.Is(err, nats.ErrTimeout) {
		if errors.Is(err, jetstream.ErrConsumerNotFound) || errors.Is(err, jetstream.ErrConsumerDeleted) {
			tq.forgetConsumer()
		}
		return nil, err
	}
	return nil, nil
}

// onDoorbell marks the tenant of a job just published on the queue.
func (s *scheduler) onDoorbell(m *nats.Msg) {
	if q, tenant, ok := s.w.cfg.Subjects.ParseJobs(m.Subject); ok && q == s.w.cfg.Queue {
		s.mark(tenant)
	}
}

// refresh asks the jobs stream which tenants of the queue have jobs, and
// forgets tenants idle for long.
func (s *scheduler) refresh(ctx context.Context) error {
	info, err := s.w.jobs.Info(ctx, jetstream.WithSubjectFilter(s.w.cfg.Subjects.QueueJobs(s.w.cfg.Queue)))
	if err != nil {
		return err
	}
	for subject, n := range info.State.Subjects {
		q, tenant, ok := s.w.cfg.Subjects.ParseJobs(subject)
		switch {
		case ok && q == s.w.cfg.Queue && n > 0:
			if s.w.quotas != nil {
				// read before the tenant's jobs are picked (max_running)
				s.w.quotas.limits(ctx, tenant)
			}
			s.mark(tenant)
		case !ok && n > 0:
			// No tenant to answer to, and no consumer would ever take
			// them: drop them rather than keep them forever.
			if err := s.w.jobs.Purge(ctx, jetstream.WithPurgeSubject(subject)); err != nil {
				return fmt.Errorf("dropping jobs on %s: %w", truncate(subject), err)
			}
			s.w.log.Warn("dropped jobs on a subject without a valid tenant", "subject", truncate(subject), "jobs", n)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	kept := s.order[:0]
	for _, name := range s.order {
		tq := s.tenants[name]
		if !tq.work && tq.running == 0 && time.Since(tq.seen) > tenantForget {
			delete(s.tenants, name)
			continue
		}
		kept = append(kept, name)
	}
	s.order = kept
	if s.next >= len(s.order) {
		s.next = 0
	}
	return nil
}

// refreshLoop runs refresh every tenantRefresh until ctx ends.
func (s *scheduler) refreshLoop(ctx context.Context, log *slog.Logger) {
	t := time.NewTicker(tenantRefresh)
	defer t.Stop()
	for {
		if err := s.refresh(ctx); err != nil && ctx.Err() == nil {
			log.Warn("listing the tenants with queued jobs", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// dropLegacyConsumers removes the queue's catch-all consumer of workers
// before fair share: its filter (<prefix>.jobs.<queue>.*) overlaps every
// tenant's, which a work-queue stream refuses. Its unacknowledged jobs
// stay in the stream and are delivered anew by the tenants' consumers.
func dropLegacyConsumers(ctx context.Context, js jetstream.JetStream, s jobs.Subjects, queue string, log *slog.Logger) error {
	for _, c := range []struct{ stream, name string }{
		{s.JobsStream(), s.ConsumerName(queue)},
	} {
		err := js.DeleteConsumer(ctx, c.stream, c.name)
		switch {
		case err == nil:
			log.Warn("removed the queue's consumer of before fair share (one consumer per tenant now)", "stream", c.stream, "consumer", c.name)
		case errors.Is(err, jetstream.ErrConsumerNotFound):
		default:
			return fmt.Errorf("worker: removing consumer %s of %s: %w", c.name, c.stream, err)
		}
	}
	return nil
}

// maxRunning is how many jobs of tenant may run at once on this worker:
// its max_running quota (as last read; the scheduler must not wait for
// a lookup). Counted per worker: see docs/operations.md "Quotas".
func (w *Worker) maxRunning(tenant string) int {
	if w.quotas == nil {
		return w.cfg.Concurrency
	}
	q, ok := w.quotas.cached(tenant)
	if !ok {
		// Not read yet (the first job reads them): one at a time.
		return 1
	}
	return max(1, min(w.cfg.Concurrency, q.MaxRunning))
}

// admit applies the tenant's quotas to a job about to run.
func (w *Worker) admit(ctx context.Context, d *delivery, job *jobs.Job, plan *jobs.Plan) error {
	if w.quotas == nil {
		return nil
	}
	err := w.quotas.admit(ctx, d.tenant, job, plan, d.queued, d.attempt <= 1)
	if err == nil && plan.MemoryBytes < w.cfg.Policy.MinMemoryBytes {
		// A tenant quota below what the interpreter needs would never start.
		err = quotaReject(QuotaMemoryPerJob, 0, "tenant %s's memory quota of %d MiB is below the %d MiB the interpreter needs",
			d.tenant, plan.MemoryBytes>>20, w.cfg.Policy.MinMemoryBytes>>20)
	}
	if re, ok := jobs.AsReject(err); ok {
		d.log.Warn("job over its tenant's quota", "limit", re.Limit, "retry_after", re.RetryAfter)
		if o, ok := w.cfg.Observer.(quotaObserver); ok {
			o.QuotaExceeded(d.tenant, re.Limit)
		}
	}
	return err
}

// quotaObserver is implemented by an Observer that counts quota
// rejections per tenant.
type quotaObserver interface {
	QuotaExceeded(tenant, limit string)
}

// tenantObserver is implemented by an Observer that counts finished jobs
// per tenant.
type tenantObserver interface {
	TenantJobFinished(tenant, status string)
}
