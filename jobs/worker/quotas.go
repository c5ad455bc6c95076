package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/eryx-dev/eryx/auth"
	"github.com/eryx-dev/eryx/jobs"
)

// QuotaSource gives a tenant's quotas, with defaults filled in.
type QuotaSource interface {
	Quotas(ctx context.Context, tenant string) (auth.Quotas, error)
}

// The quotas a worker enforces, as named in results (Result.Limit) and
// metrics.
const (
	QuotaMaxRunning       = "max_running"
	QuotaSubmissionRate   = "submissions_per_second"
	QuotaMemoryPerJob     = "memory_per_job"
	QuotaExecSecondsHour  = "exec_seconds_per_hour"
	quotaCacheTTL         = 30 * time.Second
	quotaStoreRetry       = 30 * time.Second
	quotaMaxTenants       = 10_000
	execWindowBuckets     = 60 // one per minute of the hour
	execWindowBucketWidth = time.Minute
)

// StoreQuotas reads quotas from the tenants of eryx-auth's bucket
// (auth.OpenTenantStore). A tenant it has no record of has
// auth.DefaultQuotas. Until the bucket exists (a deployment without
// eryx-auth: one operator's own jobs) no quotas apply (auth.NoQuotas);
// opening it is retried every 30 s.
func StoreQuotas(js jetstream.JetStream, prefix string) QuotaSource {
	return &storeQuotas{js: js, prefix: prefix}
}

type storeQuotas struct {
	js     jetstream.JetStream
	prefix string

	mu    sync.Mutex
	ts    *auth.TenantStore
	tried time.Time
}

func (s *storeQuotas) store(ctx context.Context) (*auth.TenantStore, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ts != nil || time.Since(s.tried) < quotaStoreRetry {
		return s.ts, nil
	}
	s.tried = time.Now()
	ts, err := auth.OpenTenantStore(ctx, s.js, s.prefix)
	if err != nil {
		if errors.Is(err, auth.ErrNoStore) {
			return nil, nil
		}
		return nil, err
	}
	s.ts = ts
	return ts, nil
}

func (s *storeQuotas) Quotas(ctx context.Context, tenant string) (auth.Quotas, error) {
	ts, err := s.store(ctx)
	if err != nil {
		return auth.DefaultQuotas, err
	}
	if ts == nil {
		return auth.NoQuotas(), nil
	}
	q, err := ts.Quotas(ctx, tenant)
	if errors.Is(err, auth.ErrUnknownTenant) {
		return auth.DefaultQuotas, nil
	}
	return q, err
}

// quotaState is what a worker knows and counts of one tenant. All of it
// is this worker's: see docs/operations.md "Quotas" for why.
type quotaState struct {
	q       auth.Quotas
	fetched time.Time
	have    bool

	// token bucket of submissions, advanced by the jobs' publication
	// times (so a backlog is judged by when it was sent, not fetched)
	tokens float64
	last   time.Time

	// execution seconds per minute over the last hour
	exec     [execWindowBuckets]float64
	execHead int64 // minute (Unix) of the newest bucket
}

// quotas enforces the tenants' quotas on this worker.
type quotas struct {
	src QuotaSource
	log *slog.Logger

	mu      sync.Mutex
	tenants map[string]*quotaState
}

func newQuotas(src QuotaSource, log *slog.Logger) *quotas {
	return &quotas{src: src, log: log, tenants: map[string]*quotaState{}}
}

// state returns tenant's state, creating it. q.mu is held.
func (q *quotas) state(tenant string) *quotaState {
	st := q.tenants[tenant]
	if st == nil {
		if len(q.tenants) >= quotaMaxTenants {
			// Bounded: forget everything (counts restart, which only
			// errs on the side of admitting).
			q.tenants = map[string]*quotaState{}
		}
		st = &quotaState{}
		q.tenants[tenant] = st
	}
	return st
}

// limits returns tenant's quotas, refreshed from the source every
// quotaCacheTTL. A failed read keeps the last known (or default) quotas.
func (q *quotas) limits(ctx context.Context, tenant string) auth.Quotas {
	q.mu.Lock()
	st := q.state(tenant)
	if st.have && time.Since(st.fetched) < quotaCacheTTL {
		lim := st.q
		q.mu.Unlock()
		return lim
	}
	q.mu.Unlock()
	lim, err := q.src.Quotas(ctx, tenant)
	if err != nil {
		q.log.Warn("reading a tenant's quotas", "tenant", tenant, "err", err)
	}
	lim = lim.WithDefaults()
	q.mu.Lock()
	defer q.mu.Unlock()
	st = q.state(tenant)
	if err == nil || !st.have {
		st.q, st.have = lim, true
	}
	st.fetched = time.Now()
	return st.q
}

// cached returns tenant's quotas as last read, without asking the
// source; ok is false if they were never read.
func (q *quotas) cached(tenant string) (auth.Quotas, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if st := q.tenants[tenant]; st != nil && st.have {
		return st.q, true
	}
	return auth.DefaultQuotas, false
}

func quotaReject(limit string, retry time.Duration, format string, args ...any) *jobs.RejectError {
	return &jobs.RejectError{Code: jobs.CodeQuotaExceeded, Limit: limit, RetryAfter: retry,
		Reason: fmt.Sprintf(format, args...)}
}

// admit checks a job against its tenant's quotas before it runs, and caps
// its memory to the tenant's. queued is when the job was published;
// first is false for a redelivery (admitted already).
func (q *quotas) admit(ctx context.Context, tenant string, job *jobs.Job, plan *jobs.Plan, queued time.Time, first bool) error {
	lim := q.limits(ctx, tenant)
	if mem := uint64(lim.MemoryPerJob); plan.MemoryBytes > mem {
		if job.MemoryMB > 0 {
			return quotaReject(QuotaMemoryPerJob, 0, "memory_mb %d is above tenant %s's quota of %d MiB per job",
				job.MemoryMB, tenant, lim.MemoryPerJob>>20)
		}
		plan.MemoryBytes = mem
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	st := q.state(tenant)
	now := time.Now()
	if used := st.execUsed(now); used >= float64(lim.ExecSecondsPerHour) {
		return quotaReject(QuotaExecSecondsHour, st.execRetry(now, float64(lim.ExecSecondsPerHour)),
			"tenant %s used %.0f of its %d execution seconds in the last hour", tenant, used, lim.ExecSecondsPerHour)
	}
	if first {
		if wait, ok := st.take(queued, float64(lim.SubmissionsPerSecond)); !ok {
			return quotaReject(QuotaSubmissionRate, wait, "tenant %s submits faster than its %d jobs per second",
				tenant, lim.SubmissionsPerSecond)
		}
	}
	return nil
}

// take spends one token of the bucket (rate per second, burst one
// second's worth) at time at; if there is none, how long until there is.
func (st *quotaState) take(at time.Time, rate float64) (time.Duration, bool) {
	burst := math.Max(rate, 1)
	switch {
	case st.last.IsZero():
		st.tokens = burst
	case at.After(st.last):
		st.tokens = math.Min(burst, st.tokens+at.Sub(st.last).Seconds()*rate)
	}
	if at.After(st.last) {
		st.last = at
	}
	if st.tokens < 1 {
		return time.Duration((1 - st.tokens) / rate * float64(time.Second)), false
	}
	st.tokens--
	return 0, true
}

// advance moves the execution window's head to now's minute, clearing
// the buckets that fell out of the hour.
func (st *quotaState) advance(now time.Time) {
	m := now.Unix() / int64(execWindowBucketWidth/time.Second)
	if st.execHead == 0 || m-st.execHead >= execWindowBuckets {
		st.exec = [execWindowBuckets]float64{}
		st.execHead = m
		return
	}
	for ; st.execHead < m; st.execHead++ {
		st.exec[(st.execHead+1)%execWindowBuckets] = 0
	}
}

func (st *quotaState) execUsed(now time.Time) float64 {
	st.advance(now)
	var sum float64
	for _, v := range st.exec {
		sum += v
	}
	return sum
}

// execRetry is how long until the seconds used fall below limit, as the
// oldest minutes leave the hour.
func (st *quotaState) execRetry(now time.Time, limit float64) time.Duration {
	used := st.execUsed(now)
	next := time.Unix((st.execHead+1)*int64(execWindowBucketWidth/time.Second), 0)
	for i := int64(1); i <= execWindowBuckets; i++ {
		// bucket leaving the window at next + (i-1) minutes
		used -= st.exec[(st.execHead+i)%execWindowBuckets]
		if used < limit {
			return next.Add(time.Duration(i-1) * execWindowBucketWidth).Sub(now)
		}
	}
	return time.Hour
}

// charge counts d of slot time against tenant's execution seconds.
func (q *quotas) charge(tenant string, d time.Duration, now time.Time) {
	q.mu.Lock()
	defer q.mu.Unlock()
	st := q.state(tenant)
	st.advance(now)
	st.exec[st.execHead%execWindowBuckets] += d.Seconds()
}
