package worker

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/eryx-dev/eryx/jobs"
	"github.com/eryx-dev/eryx/kvstate"
	"github.com/eryx-dev/eryx/runtime/sandbox"
)

// ErrSessionConflict is what SessionStore.Commit returns when the session
// changed since the revision the job started from.
var ErrSessionConflict = errors.New("worker: session changed concurrently")

// SessionStore keeps session snapshots so that a session can continue on
// any worker. KVSessions adapts the platform's store (kvstate). Ids are
// the sessions' keys, jobs.SessionKey(tenant, session).
type SessionStore interface {
	// LoadSince returns the session's latest revision and, unless that is
	// still have, its snapshot. A session that does not exist is (nil, 0);
	// one whose snapshot fails its integrity check is a session_tampered
	// rejection.
	LoadSince(ctx context.Context, id string, have uint64) ([]byte, uint64, error)
	// Commit saves data as the session's state if the session is still at
	// rev (0: it must not exist yet) and returns the new revision, or an
	// error wrapping ErrSessionConflict.
	Commit(ctx context.Context, id string, data []byte, rev uint64, worker string) (uint64, error)
}

// KVSessions adapts a kvstate.Store to SessionStore.
func KVSessions(store *kvstate.Store) SessionStore { return kvSessions{store} }

// sweeper is a SessionStore that can remove blobs no session references.
type sweeper interface {
	Sweep(ctx context.Context) (int, error)
}

func (k kvSessions) Sweep(ctx context.Context) (int, error) { return k.s.Sweep(ctx) }

// sweepLoop sweeps the store every SessionSweep. Every worker runs it:
// Sweep only removes what no entry references and what is older than the
// store's grace period, so concurrent sweeps are harmless, and the random
// start keeps a fleet from sweeping at once.
func (w *Worker) sweepLoop(ctx context.Context, sw sweeper) {
	every := w.cfg.SessionSweep
	t := time.NewTimer(rand.N(every))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		n, err := sw.Sweep(ctx)
		switch {
		case err != nil && ctx.Err() == nil:
			w.log.Warn("sweeping session blobs failed", "err", err)
		case n > 0:
			w.log.Info("swept orphaned session blobs", "removed", n)
		}
		t.Reset(every)
	}
}

type kvSessions struct{ s *kvstate.Store }

func (k kvSessions) LoadSince(ctx context.Context, id string, have uint64) ([]byte, uint64, error) {
	sess, err := k.s.LoadSince(ctx, id, have)
	switch {
	case errors.Is(err, kvstate.ErrNotFound):
		return nil, 0, nil
	case errors.Is(err, kvstate.ErrTooLarge):
		// Refused before download; retrying elsewhere would not help.
		return nil, 0, reject(jobs.CodeTooLarge, "session %s cannot be loaded: %v", id, err)
	case errors.Is(err, kvstate.ErrTampered):
		// Never restored: code planted in a snapshot would run as the
		// session's owner. Every worker shares the key, so none would.
		return nil, 0, reject(jobs.CodeSessionTampered, "session %s was not written by a worker and is not restored: %v", id, err)
	case err != nil:
		return nil, 0, err
	}
	return sess.Data, sess.Revision, nil
}

func (k kvSessions) Commit(ctx context.Context, id string, data []byte, rev uint64, worker string) (uint64, error) {
	n, err := k.s.Commit(ctx, id, data, rev, kvstate.CommitOptions{Worker: worker})
	if errors.Is(err, kvstate.ErrConflict) {
		return 0, fmt.Errorf("%w: %w", ErrSessionConflict, err)
	}
	return n, err
}

// sessionOutcome is what became of a session job's state.
type sessionOutcome struct {
	rev     uint64
	skipped []sandbox.SkippedVariable
	err     string // why the state was not saved
}

func (o *sessionOutcome) apply(res *jobs.Result) {
	res.SessionRevision = o.rev
	for _, s := range o.skipped {
		res.SessionSkipped = append(res.SessionSkipped, jobs.SkippedVariable{Name: s.Name, Reason: s.Reason})
	}
	if o.err == "" {
		return
	}
	res.SessionError = o.err
	if res.Status == jobs.StatusOK {
		// The code ran, but what it did to the session is lost: the caller
		// must know, or its next job will run on state it did not expect.
		res.Status = jobs.StatusError
		res.Error = &jobs.ErrorInfo{Type: "eryx.SessionError", Message: o.err}
	}
}

// runSession runs a session job: in the session's warm sandbox if this
// worker ran its latest revision, else in a fresh one restored from the
// store; then it saves the new state under the next revision.
func (w *Worker) runSession(ctx context.Context, d *delivery, job *jobs.Job, opts sandbox.ExecOptions, pkgs []*sandbox.Package) (*sandbox.Result, *sessionOutcome, error) {
	store := w.cfg.Sessions
	// The tenant is part of the key, in the store and in the warm cache:
	// the same session id in two tenants is two sessions.
	id := jobs.SessionKey(d.tenant, job.Session)
	e, err := w.sessions.lock(ctx, id)
	if err != nil {
		return nil, nil, err
	}
	defer w.sessions.unlock(e)

	have := uint64(0)
	if e.sb != nil {
		have = e.rev
	}
	data, rev, err := store.LoadSince(ctx, id, have)
	if err != nil {
		if _, ok := jobs.AsReject(err); ok {
			return nil, nil, err
		}
		return nil, nil, fmt.Errorf("worker: loading session %s: %w", id, err)
	}
	if e.sb == nil || e.rev != rev {
		if e.sb != nil {
			d.log.Info("session ran elsewhere since: restoring it", "session", id, "have", e.rev, "latest", rev)
		}
		w.sessions.discard(e)
		sb, err := w.sandboxes.Acquire(ctx)
		if err != nil {
			return nil, nil, err
		}
		e.sb, e.rev = sb, rev
		if len(data) > 0 {
			if _, err := sb.RestoreState(ctx, data, pkgs...); err != nil {
				w.sessions.discard(e)
				if ctx.Err() != nil {
					return nil, nil, err
				}
				return nil, nil, reject(jobs.CodeUnsupported, "session %s cannot be restored here: %v", id, err)
			}
		}
	}

	res, err := e.sb.Execute(ctx, job.Code, opts)
	if res == nil {
		w.sessions.discard(e)
		return nil, nil, err
	}
	out := &sessionOutcome{}
	switch res.Status {
	case sandbox.StatusOK, sandbox.StatusError, sandbox.StatusExit:
	default:
		// Stopped part-way (timeout, cancel) or crashed (a trap): the
		// namespace is in no state to keep, warm or in KV.
		w.sessions.discard(e)
		out.err = fmt.Sprintf("the job did not complete (%s): the session keeps its previous state", res.Status)
		return res, out, err // the cause, for the worker's log
	}
	// After a MemoryError the namespace is as consistent as after any
	// exception, so it is saved; but the sandbox's linear memory grew to
	// the limit and never shrinks, so it is not kept warm: the next job
	// restores the saved state into a fresh sandbox.
	dropWarm := memoryErrored(res)
	snap, err := e.sb.SnapshotState(ctx, w.cfg.SnapshotBytes)
	if err != nil {
		w.sessions.discard(e)
		out.err = fmt.Sprintf("saving the session failed: %v", err)
		return res, out, nil
	}
	newRev, err := store.Commit(ctx, id, snap.Data, e.rev, w.cfg.ID)
	if err != nil {
		w.sessions.discard(e)
		if errors.Is(err, ErrSessionConflict) {
			out.err = "another job of the session saved its state first: this job's changes were not saved"
		} else {
			out.err = fmt.Sprintf("saving the session failed: %v", err)
		}
		return res, out, nil
	}
	e.rev = newRev
	e.mem.Store(res.Stats.PeakMemoryBytes)
	out.rev, out.skipped = newRev, snap.Skipped
	switch {
	case dropWarm:
		d.log.Info("session hit its memory limit: not kept warm", "session", id)
		w.sessions.discard(e)
	case e.mem.Load() > w.sessions.budget:
		d.log.Info("session alone is above the warm-session memory budget: not kept warm",
			"session", id, "memory", e.mem.Load(), "budget", w.sessions.budget)
		w.sessions.discard(e)
		w.bound(BoundSessionMemory)
	}
	return res, out, nil
}

// memoryErrored reports whether the job ran out of memory.
func memoryErrored(res *sandbox.Result) bool {
	return res.Stats.MemoryLimitHit || (res.Error != nil && res.Error.Type == "MemoryError")
}

// warmSession is a session's sandbox kept in memory between its jobs.
type warmSession struct {
	id       string
	lockc    chan struct{} // a mutex that a context can give up on
	sb       *sandbox.Sandbox
	rev      uint64        // the revision sb's state corresponds to
	mem      atomic.Uint64 // sb's linear memory after its last job (read by evict without the lock)
	lastUsed time.Time
	gone     bool // evicted: look the session up again
}

// DefaultSessionMemory is the default budget of the warm sessions'
// linear memory, all together.
const DefaultSessionMemory = 256 << 20

// sessionCache keeps the sandboxes of recently run sessions, and
// serialises the jobs of one session on this worker. It holds at most max
// sessions and budget bytes of their sandboxes' linear memory; beyond
// either, the least recently used idle sessions leave memory. A warm
// sandbox always holds the state last committed to the store (runSession
// discards it otherwise), so leaving memory loses nothing: the next job
// restores the session from the store.
type sessionCache struct {
	sandboxes Sandboxes
	max       int
	idle      time.Duration
	budget    uint64
	// onEvict is told of each session evicted for the memory budget.
	onEvict func()

	mu      sync.Mutex
	entries map[string]*warmSession
}

func newSessionCache(sbs Sandboxes, max int, idle time.Duration, budget uint64) *sessionCache {
	return &sessionCache{sandboxes: sbs, max: max, idle: idle, budget: budget, entries: make(map[string]*warmSession)}
}

// lock returns the session's entry, held until unlock.
func (c *sessionCache) lock(ctx context.Context, id string) (*warmSession, error) {
	for {
		c.mu.Lock()
		e := c.entries[id]
		if e == nil {
			e = &warmSession{id: id, lockc: make(chan struct{}, 1), lastUsed: time.Now()}
			c.entries[id] = e
		}
		c.mu.Unlock()
		select {
		case e.lockc <- struct{}{}:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		if !e.gone {
			return e, nil
		}
		<-e.lockc
	}
}

func (c *sessionCache) unlock(e *warmSession) {
	e.lastUsed = time.Now()
	<-e.lockc
	c.evict(false)
}

// discard releases the entry's sandbox; the caller holds the entry.
func (c *sessionCache) discard(e *warmSession) {
	if e.sb != nil {
		c.sandboxes.Release(e.sb)
		e.sb, e.rev = nil, 0
		e.mem.Store(0)
	}
}

// evict drops idle sessions, and the least recently used ones beyond the
// cache's size or memory budget. Sessions in use are skipped (they are
// running jobs, within the pool's memory) but count towards the budget.
func (c *sessionCache) evict(all bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	list := make([]*warmSession, 0, len(c.entries))
	var used uint64
	for _, e := range c.entries {
		list = append(list, e)
		used += e.memory()
	}
	sort.Slice(list, func(i, j int) bool { return list[i].lastUsed.Before(list[j].lastUsed) })
	excess := len(list) - c.max
	for _, e := range list {
		overBudget := used > c.budget
		if !all && excess <= 0 && !overBudget && time.Since(e.lastUsed) < c.idle {
			break
		}
		select {
		case e.lockc <- struct{}{}:
		default:
			continue // in use
		}
		if overBudget && excess <= 0 && !all && e.sb != nil && c.onEvict != nil {
			c.onEvict()
		}
		used -= e.memory()
		e.gone = true
		delete(c.entries, e.id)
		c.discard(e)
		<-e.lockc
		excess--
	}
}

// memory is the entry's warm memory. A held entry may be changing it; its
// previous value is good enough for a budget.
func (e *warmSession) memory() uint64 {
	return e.mem.Load()
}

// warmMemory is the warm sessions' linear memory, for tests and metrics.
func (c *sessionCache) warmMemory() (sessions int, bytes uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, e := range c.entries {
		if m := e.memory(); m > 0 {
			sessions++
			bytes += m
		}
	}
	return sessions, bytes
}

// janitor evicts idle sessions until ctx ends.
func (c *sessionCache) janitor(ctx context.Context) {
	t := time.NewTicker(min(c.idle/4+time.Millisecond, time.Minute))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			c.evict(false)
		}
	}
}

func (c *sessionCache) closeAll() { c.evict(true) }
