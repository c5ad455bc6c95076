package worker

import (
	"context"
	"errors"
	"sync"
	"time"
)

// Why a job's context was cancelled. The cause decides what the worker
// does next: a user's cancel gets a "cancelled" result, a drain puts the
// job back on the queue, a lost connection can do neither.
var (
	errUserCancel = errors.New("worker: cancelled by request")
	errDraining   = errors.New("worker: worker draining")
	errConnLost   = errors.New("worker: NATS connection closed")
)

// Defaults of the cancel registry.
const (
	// recentCancelTTL is how long a worker remembers a cancel for a job it
	// is not running. The control stream is the durable record; this
	// memory only closes the gap between a cancel's delivery and its
	// storage.
	recentCancelTTL = 10 * time.Minute
	// DefaultRememberedCancels bounds the cancels of jobs not running here
	// that a worker remembers; the oldest is forgotten first.
	DefaultRememberedCancels = 4096
	// DefaultCancelRate and DefaultCancelBurst are the token bucket of
	// remembered cancels per second (cancels of running jobs are never
	// limited).
	DefaultCancelRate  = 1000
	DefaultCancelBurst = 2000
	// cancelPendingMsgs and cancelPendingBytes bound what the NATS client
	// buffers for the cancel subscription; a flood beyond is dropped by
	// the client (the control stream still has the cancels).
	cancelPendingMsgs  = 16 << 10
	cancelPendingBytes = 4 << 20
)

// cancelRegistry tracks the jobs a worker runs, so that a cancel message
// reaches the right context, and the cancels it has seen, so that a job
// starting just after its cancel was delivered is still cancelled.
//
// Every operation is O(1): the remembered cancels are a fixed ring whose
// oldest slot is overwritten, indexed by a map. Nothing is ever scanned
// under mu, which job start and finish take too.
type cancelRegistry struct {
	mu      sync.Mutex
	running map[string]context.CancelCauseFunc
	seen    map[string]int // id -> slot in ring
	ring    []seenCancel
	next    int // slot the next new cancel overwrites
	ttl     time.Duration
	bucket  tokenBucket
	dropped uint64 // cancels not remembered because of the rate limit
}

type seenCancel struct {
	id string
	at time.Time
}

func newCancelRegistry(remember int, rate, burst float64) *cancelRegistry {
	if remember <= 0 {
		remember = DefaultRememberedCancels
	}
	if rate <= 0 {
		rate = DefaultCancelRate
	}
	if burst < 1 {
		burst = max(rate*2, 1)
	}
	return &cancelRegistry{
		running: make(map[string]context.CancelCauseFunc),
		seen:    make(map[string]int, remember),
		ring:    make([]seenCancel, remember),
		ttl:     recentCancelTTL,
		bucket:  tokenBucket{rate: rate, burst: burst, tokens: burst},
	}
}

// cancelOutcome is what cancel did with a cancel message.
type cancelOutcome int

const (
	cancelRemembered cancelOutcome = iota // not running here: remembered
	cancelStopped                         // running here: stopped
	cancelDropped                         // not running, over the rate: forgotten
)

// cancel records a cancel for id and stops it if it runs here. Cancelling
// twice, or a job that finished, does nothing more. Cancels of jobs that
// do not run here are remembered within the rate limit only; past it,
// the control stream (checked at job start) is their only record.
func (r *cancelRegistry) cancel(id string) cancelOutcome {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := time.Now()
	if stop, ok := r.running[id]; ok {
		r.remember(id, now)
		stop(errUserCancel)
		return cancelStopped
	}
	if i, ok := r.seen[id]; ok {
		r.ring[i].at = now
		return cancelRemembered
	}
	if !r.bucket.take(now) {
		r.dropped++
		return cancelDropped
	}
	r.remember(id, now)
	return cancelRemembered
}

// remember puts id in the ring, overwriting the oldest slot. r.mu is held.
func (r *cancelRegistry) remember(id string, now time.Time) {
	if i, ok := r.seen[id]; ok {
		r.ring[i].at = now
		return
	}
	old := r.ring[r.next]
	if old.id != "" && r.seen[old.id] == r.next {
		delete(r.seen, old.id)
	}
	r.ring[r.next] = seenCancel{id: id, at: now}
	r.seen[id] = r.next
	r.next = (r.next + 1) % len(r.ring)
}

// start registers a running job. It reports false when the job must not
// run: it was cancelled already, or it runs here already (a duplicate
// delivery, which the caller drops).
func (r *cancelRegistry) start(id string, stop context.CancelCauseFunc) (cancelled, duplicate bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if i, ok := r.seen[id]; ok && time.Since(r.ring[i].at) < r.ttl {
		return true, false
	}
	if _, ok := r.running[id]; ok {
		return false, true
	}
	r.running[id] = stop
	return false, false
}

func (r *cancelRegistry) done(id string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.running, id)
}

// stopAll cancels every running job with cause (at most the pool size).
func (r *cancelRegistry) stopAll(cause error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, stop := range r.running {
		stop(cause)
	}
}

// stats reports how many cancels are remembered and how many the rate
// limit dropped so far.
func (r *cancelRegistry) stats() (remembered int, dropped uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.seen), r.dropped
}

// tokenBucket is a rate limiter: rate tokens a second, at most burst.
type tokenBucket struct {
	rate, burst, tokens float64
	last                time.Time
}

func (b *tokenBucket) take(now time.Time) bool {
	if !b.last.IsZero() {
		b.tokens = min(b.burst, b.tokens+now.Sub(b.last).Seconds()*b.rate)
	}
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}
