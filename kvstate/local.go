package kvstate

import (
	"container/list"
	"sync"
)

// Local keeps the sessions a worker ran warm in memory (typically the
// sandbox itself), each tagged with the revision it holds. A session is
// reused only when the store is still at that revision; when another
// worker committed since, the local copy is stale and the worker restores
// from the store instead. The worker's loop:
//
//	sess, err := store.LoadSince(ctx, id, local.Revision(id))
//	// ErrNotFound: a new session; local.Remove(id), run on a fresh
//	// sandbox, commit with expected revision 0.
//	v, ok := local.Take(id, sess.Revision) // warm; exclusive while the job runs
//	if !ok {
//		if sess.Data == nil { // another job of the session took it meanwhile
//			sess, err = store.Load(ctx, id)
//		}
//		v = restore(sess.Data) // cold: from the snapshot
//	}
//	... run the job on v ...
//	rev, err := store.Commit(ctx, id, snapshot(v), sess.Revision, opts)
//	if err == nil {
//		local.Put(id, rev, v)
//	} else {
//		discard(v) // ErrConflict: another job of the session committed first
//	}
//
// Local holds at most its capacity of sessions, evicting the least
// recently used; onEvict (if any) releases what it drops. It is safe for
// concurrent use.
type Local[V any] struct {
	mu      sync.Mutex
	cap     int
	onEvict func(id string, v V)
	byID    map[string]*list.Element
	lru     *list.List // front: most recently used
}

type localEntry[V any] struct {
	id  string
	rev uint64
	v   V
}

// NewLocal returns a Local of the given capacity (at least 1).
func NewLocal[V any](capacity int, onEvict func(id string, v V)) *Local[V] {
	return &Local[V]{cap: max(capacity, 1), onEvict: onEvict, byID: map[string]*list.Element{}, lru: list.New()}
}

// Revision returns the revision held for id, 0 if none: the argument of
// Store.LoadSince.
func (l *Local[V]) Revision(id string) uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	if el, ok := l.byID[id]; ok {
		return el.Value.(*localEntry[V]).rev
	}
	return 0
}

// Get returns the value held for id if it is at revision rev, leaving it
// in place. A value at another revision is stale: it is evicted.
func (l *Local[V]) Get(id string, rev uint64) (V, bool) {
	return l.lookup(id, rev, false)
}

// Take is Get that also removes the value, for values one job uses at a
// time (a sandbox): Put it back after the commit.
func (l *Local[V]) Take(id string, rev uint64) (V, bool) {
	return l.lookup(id, rev, true)
}

func (l *Local[V]) lookup(id string, rev uint64, take bool) (V, bool) {
	var zero V
	l.mu.Lock()
	el, ok := l.byID[id]
	if !ok {
		l.mu.Unlock()
		return zero, false
	}
	e := el.Value.(*localEntry[V])
	if e.rev != rev || take {
		l.lru.Remove(el)
		delete(l.byID, id)
	} else {
		l.lru.MoveToFront(el)
	}
	l.mu.Unlock()
	if e.rev != rev {
		l.evicted(e)
		return zero, false
	}
	return e.v, true
}

// Put records v as session id at revision rev (after a successful commit
// or restore), replacing what was held.
func (l *Local[V]) Put(id string, rev uint64, v V) {
	var dropped []*localEntry[V]
	l.mu.Lock()
	if el, ok := l.byID[id]; ok {
		dropped = append(dropped, el.Value.(*localEntry[V]))
		l.lru.Remove(el)
	}
	l.byID[id] = l.lru.PushFront(&localEntry[V]{id: id, rev: rev, v: v})
	for l.lru.Len() > l.cap {
		el := l.lru.Back()
		e := el.Value.(*localEntry[V])
		l.lru.Remove(el)
		delete(l.byID, e.id)
		dropped = append(dropped, e)
	}
	l.mu.Unlock()
	for _, e := range dropped {
		l.evicted(e)
	}
}

// Remove drops id (e.g. after ErrConflict or a delete).
func (l *Local[V]) Remove(id string) {
	l.mu.Lock()
	el, ok := l.byID[id]
	if ok {
		l.lru.Remove(el)
		delete(l.byID, id)
	}
	l.mu.Unlock()
	if ok {
		l.evicted(el.Value.(*localEntry[V]))
	}
}

// Len returns how many sessions are held.
func (l *Local[V]) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.lru.Len()
}

// Clear drops every session (worker shutdown).
func (l *Local[V]) Clear() {
	l.mu.Lock()
	var dropped []*localEntry[V]
	for el := l.lru.Front(); el != nil; el = el.Next() {
		dropped = append(dropped, el.Value.(*localEntry[V]))
	}
	l.lru.Init()
	clear(l.byID)
	l.mu.Unlock()
	for _, e := range dropped {
		l.evicted(e)
	}
}

// evicted runs onEvict outside the lock: releasing a sandbox may be slow.
func (l *Local[V]) evicted(e *localEntry[V]) {
	if l.onEvict != nil {
		l.onEvict(e.id, e.v)
	}
}
