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

// recentCancelTTL is how long a worker remembers a cancel for a job it is
// not running. The control stream is the durable record; this memory only
// closes the gap between a cancel's delivery and its storage.
const recentCancelTTL = 10 * time.Minute

// cancelRegistry tracks the jobs a worker runs, so that a cancel message
// reaches the right context, and the cancels it has seen, so that a job
// starting just after its cancel was delivered is still cancelled.
type cancelRegistry struct {
	mu      sync.Mutex
	running map[string]context.CancelCauseFunc
	seen    map[string]time.Time
}

func newCancelRegistry() *cancelRegistry {
	return &cancelRegistry{
		running: make(map[string]context.CancelCauseFunc),
		seen:    make(map[string]time.Time),
	}
}

// cancel records a cancel for id and stops it if it runs here. Cancelling
// twice, or a job that finished, does nothing more.
func (r *cancelRegistry) cancel(id string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := time.Now()
	if len(r.seen) > 4096 {
		for k, t := range r.seen {
			if now.Sub(t) > recentCancelTTL {
				delete(r.seen, k)
			}
		}
	}
	r.seen[id] = now
	if stop, ok := r.running[id]; ok {
		stop(errUserCancel)
		return true
	}
	return false
}

// start registers a running job. It reports false when the job must not
// run: it was cancelled already, or it runs here already (a duplicate
// delivery, which the caller drops).
func (r *cancelRegistry) start(id string, stop context.CancelCauseFunc) (cancelled, duplicate bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if t, ok := r.seen[id]; ok && time.Since(t) < recentCancelTTL {
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

// stopAll cancels every running job with cause.
func (r *cancelRegistry) stopAll(cause error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, stop := range r.running {
		stop(cause)
	}
}
