// Package pool keeps pre-created sandboxes ready so that a job starts in
// microseconds instead of the few milliseconds a sandbox takes to create.
//
// A sandbox serves one job at a time, and every job starts from the
// engine's image: Release resets the sandbox in place (Sandbox.Reset: the
// dirtied pages are written back) when the engine can, and keeps it for the
// next job; otherwise, and whenever the job left it unusable (a crash, a
// hard stop, the memory limit) or the reset fails, it is closed and the
// pool refills in the background. No state leaks from one job to the next.
package pool

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/eryx-dev/eryx/runtime/sandbox"
)

// Errors callers branch on.
var (
	ErrClosed         = errors.New("pool: closed")
	ErrAcquireTimeout = errors.New("pool: timed out waiting for a sandbox")
)

// Config sizes the pool. Zero fields take the defaults.
type Config struct {
	// MaxSize bounds the sandboxes alive at once, idle and in use (default 8).
	MaxSize int
	// MinIdle is how many ready sandboxes the pool keeps (default 2, at most
	// MaxSize).
	MinIdle int
	// IdleTimeout closes idle sandboxes above MinIdle after this long
	// (default 5 minutes).
	IdleTimeout time.Duration
	// AcquireTimeout bounds how long Acquire waits for a sandbox (default 30 s).
	AcquireTimeout time.Duration
	// Limits are the sandboxes' limits; MemoryBytes is the most any job can
	// be given (a job can ask for less).
	Limits sandbox.Limits
	// OnCreate, if set, is called after each sandbox creation (for metrics;
	// it runs under the pool's lock, so it must be quick).
	OnCreate func()
	// NoReuse closes every released sandbox instead of resetting it.
	NoReuse bool
	// OnResetError, if set, is told why a released sandbox could not be
	// reset (it has been closed); for logs.
	OnResetError func(error)
}

func (c Config) withDefaults() Config {
	if c.MaxSize <= 0 {
		c.MaxSize = 8
	}
	if c.MinIdle <= 0 {
		c.MinIdle = min(2, c.MaxSize)
	}
	c.MinIdle = min(c.MinIdle, c.MaxSize)
	if c.IdleTimeout <= 0 {
		c.IdleTimeout = 5 * time.Minute
	}
	if c.AcquireTimeout <= 0 {
		c.AcquireTimeout = 30 * time.Second
	}
	return c
}

// Stats are the pool's counters and gauges.
type Stats struct {
	Acquisitions int64         // sandboxes handed out
	Creations    int64         // sandboxes created, in the background or on demand
	InUse        int           // handed out, not yet released
	Idle         int           // ready to be handed out
	Waits        int64         // acquisitions that had to wait
	Waiting      int           // acquisitions waiting now
	TotalWait    time.Duration // time spent waiting, all acquisitions together
	CreateErrors int64         // failed creations
	Resets       int64         // released sandboxes reset in place for the next job
	ResetErrors  int64         // resets that failed (the sandbox was closed)
	Retired      int64         // released sandboxes closed as unusable (crash, hard stop, memory limit)
}

type idleSandbox struct {
	sb    *sandbox.Sandbox
	since time.Time
}

// Pool hands out fresh sandboxes. It is safe for concurrent use.
type Pool struct {
	eng *sandbox.Engine
	cfg Config

	mu       sync.Mutex
	idle     []idleSandbox
	inUse    int
	creating int
	changed  chan struct{} // closed and replaced on every change, to wake waiters
	closed   bool
	stats    Stats

	refill chan struct{}
	stop   chan struct{}
	done   chan struct{}
}

// New starts a pool and fills it to MinIdle in the background.
func New(ctx context.Context, eng *sandbox.Engine, cfg Config) (*Pool, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Limits.Validate(); err != nil {
		return nil, err
	}
	p := &Pool{
		eng: eng, cfg: cfg,
		changed: make(chan struct{}),
		refill:  make(chan struct{}, 1),
		stop:    make(chan struct{}),
		done:    make(chan struct{}),
	}
	go p.maintain(context.WithoutCancel(ctx))
	p.kick()
	return p, nil
}

// Config returns the pool's effective configuration.
func (p *Pool) Config() Config { return p.cfg }

// broadcast wakes every waiter; the caller holds p.mu.
func (p *Pool) broadcast() {
	close(p.changed)
	p.changed = make(chan struct{})
}

func (p *Pool) kick() {
	select {
	case p.refill <- struct{}{}:
	default:
	}
}

// Acquire returns a fresh sandbox, waiting at most AcquireTimeout (or until
// ctx ends) when MaxSize sandboxes are in use.
func (p *Pool) Acquire(ctx context.Context) (*sandbox.Sandbox, error) {
	start := time.Now()
	deadline := time.NewTimer(p.cfg.AcquireTimeout)
	defer deadline.Stop()
	waited := false
	for {
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			return nil, ErrClosed
		}
		if sb := p.popIdleLocked(); sb != nil {
			p.handedOutLocked(waited, start)
			p.mu.Unlock()
			p.kick()
			return sb, nil
		}
		if p.totalLocked() < p.cfg.MaxSize {
			// Nothing ready but room to grow: create on demand.
			sb, err := p.createLocked(ctx)
			if err != nil {
				p.mu.Unlock()
				return nil, fmt.Errorf("pool: creating a sandbox: %w", err)
			}
			p.handedOutLocked(waited, start)
			p.mu.Unlock()
			p.kick()
			return sb, nil
		}
		changed := p.changed
		if !waited {
			p.stats.Waiting++
		}
		waited = true
		p.mu.Unlock()
		select {
		case <-changed:
		case <-deadline.C:
			p.recordWait(start)
			return nil, fmt.Errorf("%w after %v (%d in use)", ErrAcquireTimeout, p.cfg.AcquireTimeout, p.cfg.MaxSize)
		case <-ctx.Done():
			p.recordWait(start)
			return nil, ctx.Err()
		}
	}
}

// TryAcquire returns a ready sandbox if one is idle, without waiting.
func (p *Pool) TryAcquire() (*sandbox.Sandbox, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, false
	}
	sb := p.popIdleLocked()
	if sb == nil {
		return nil, false
	}
	p.handedOutLocked(false, time.Time{})
	p.kick()
	return sb, true
}

// Release gives back a sandbox from Acquire. It is reset for the next job
// (see the package comment) or closed.
func (p *Pool) Release(sb *sandbox.Sandbox) {
	if sb == nil {
		return
	}
	ctx := context.Background()
	reuse := !p.cfg.NoReuse && p.eng.SlotReset()
	retired := false
	var resetErr error
	switch {
	case reuse && sb.Reusable():
		// Reset closes the sandbox if it fails.
		resetErr = sb.Reset(ctx)
		reuse = resetErr == nil
	case reuse:
		retired, reuse = true, false
		_ = sb.Close(ctx)
	default:
		_ = sb.Close(ctx)
	}
	p.mu.Lock()
	p.inUse--
	switch {
	case resetErr != nil:
		p.stats.ResetErrors++
	case retired:
		p.stats.Retired++
	case reuse && p.closed:
		reuse = false
	case reuse:
		p.stats.Resets++
		p.idle = append(p.idle, idleSandbox{sb: sb, since: time.Now()})
	}
	p.broadcast()
	p.mu.Unlock()
	if reuse {
		return
	}
	if sb.Reusable() { // pool closed meanwhile
		_ = sb.Close(ctx)
	}
	if resetErr != nil && p.cfg.OnResetError != nil {
		p.cfg.OnResetError(resetErr)
	}
	p.kick()
}

// Stats returns a snapshot of the pool's statistics.
func (p *Pool) Stats() Stats {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := p.stats
	s.InUse, s.Idle = p.inUse, len(p.idle)
	return s
}

// Close stops the pool and closes its idle sandboxes. Sandboxes in use stay
// valid until released.
func (p *Pool) Close(ctx context.Context) error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	idle := p.idle
	p.idle = nil
	p.broadcast()
	p.mu.Unlock()
	close(p.stop)
	<-p.done
	for _, s := range idle {
		_ = s.sb.Close(ctx)
	}
	return nil
}

// createLocked creates a sandbox, releasing p.mu meanwhile (creation takes
// a fraction of a millisecond, during which others may use the pool); it
// counts it as being created so that MaxSize holds.
func (p *Pool) createLocked(ctx context.Context) (*sandbox.Sandbox, error) {
	p.creating++
	p.mu.Unlock()
	sb, err := p.eng.NewSandbox(ctx, p.cfg.Limits)
	p.mu.Lock()
	p.creating--
	if err != nil {
		p.stats.CreateErrors++
		p.broadcast() // a waiter may now create instead
		return nil, err
	}
	p.stats.Creations++
	if p.cfg.OnCreate != nil {
		p.cfg.OnCreate()
	}
	return sb, nil
}

func (p *Pool) totalLocked() int { return len(p.idle) + p.inUse + p.creating }

// popIdleLocked takes the most recently created idle sandbox (LIFO keeps
// the others aging out under light load).
func (p *Pool) popIdleLocked() *sandbox.Sandbox {
	n := len(p.idle)
	if n == 0 {
		return nil
	}
	sb := p.idle[n-1].sb
	p.idle = p.idle[:n-1]
	return sb
}

func (p *Pool) handedOutLocked(waited bool, start time.Time) {
	p.inUse++
	p.stats.Acquisitions++
	if waited {
		p.stats.Waits++
		p.stats.Waiting--
		p.stats.TotalWait += time.Since(start)
	}
}

func (p *Pool) recordWait(start time.Time) {
	p.mu.Lock()
	p.stats.Waits++
	p.stats.Waiting--
	p.stats.TotalWait += time.Since(start)
	p.mu.Unlock()
}

// maintain keeps MinIdle sandboxes ready and retires idle ones beyond it.
func (p *Pool) maintain(ctx context.Context) {
	defer close(p.done)
	tick := time.NewTicker(max(p.cfg.IdleTimeout/4, 10*time.Millisecond))
	defer tick.Stop()
	for {
		select {
		case <-p.stop:
			return
		case <-p.refill:
			p.fill(ctx)
		case <-tick.C:
			p.reap(ctx)
			p.fill(ctx)
		}
	}
}

func (p *Pool) fill(ctx context.Context) {
	for {
		p.mu.Lock()
		if p.closed || len(p.idle)+p.creating >= p.cfg.MinIdle || p.totalLocked() >= p.cfg.MaxSize {
			p.mu.Unlock()
			return
		}
		sb, err := p.createLocked(ctx)
		if err != nil {
			p.mu.Unlock()
			return // retried at the next kick or tick
		}
		if p.closed {
			p.mu.Unlock()
			_ = sb.Close(ctx)
			return
		}
		p.idle = append(p.idle, idleSandbox{sb: sb, since: time.Now()})
		p.broadcast()
		p.mu.Unlock()
	}
}

func (p *Pool) reap(ctx context.Context) {
	p.mu.Lock()
	var old []*sandbox.Sandbox
	keep := p.idle[:0]
	for i, s := range p.idle {
		// The oldest are at the front; keep MinIdle of the newest.
		if len(p.idle)-i > p.cfg.MinIdle && time.Since(s.since) > p.cfg.IdleTimeout {
			old = append(old, s.sb)
			continue
		}
		keep = append(keep, s)
	}
	p.idle = keep
	p.mu.Unlock()
	for _, sb := range old {
		_ = sb.Close(ctx)
	}
}
