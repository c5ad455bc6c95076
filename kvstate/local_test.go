package kvstate_test

import (
	"slices"
	"sync"
	"testing"

	"github.com/eryx-dev/eryx/kvstate"
)

func TestLocal(t *testing.T) {
	type step struct {
		op      string // put, get, take, remove, clear
		id      string
		rev     uint64
		v       string
		wantV   string
		wantOK  bool
		evicted []string // values released by this step
	}
	tests := []struct {
		name  string
		cap   int
		steps []step
	}{
		{"hit at the same revision", 2, []step{
			{op: "put", id: "a", rev: 1, v: "A1"},
			{op: "get", id: "a", rev: 1, wantV: "A1", wantOK: true},
			{op: "get", id: "a", rev: 1, wantV: "A1", wantOK: true},
		}},
		{"moved elsewhere: stale copy dropped", 2, []step{
			{op: "put", id: "a", rev: 1, v: "A1"},
			{op: "get", id: "a", rev: 5, evicted: []string{"A1"}},
			{op: "get", id: "a", rev: 1},
		}},
		{"take is exclusive", 2, []step{
			{op: "put", id: "a", rev: 1, v: "A1"},
			{op: "take", id: "a", rev: 1, wantV: "A1", wantOK: true},
			{op: "take", id: "a", rev: 1},
			{op: "put", id: "a", rev: 2, v: "A2"},
			{op: "get", id: "a", rev: 2, wantV: "A2", wantOK: true},
		}},
		{"replacing releases the old value", 2, []step{
			{op: "put", id: "a", rev: 1, v: "A1"},
			{op: "put", id: "a", rev: 2, v: "A2", evicted: []string{"A1"}},
		}},
		{"least recently used goes first", 2, []step{
			{op: "put", id: "a", rev: 1, v: "A"},
			{op: "put", id: "b", rev: 1, v: "B"},
			{op: "get", id: "a", rev: 1, wantV: "A", wantOK: true},
			{op: "put", id: "c", rev: 1, v: "C", evicted: []string{"B"}},
			{op: "get", id: "b", rev: 1},
		}},
		{"remove and clear release", 3, []step{
			{op: "put", id: "a", rev: 1, v: "A"},
			{op: "put", id: "b", rev: 1, v: "B"},
			{op: "put", id: "c", rev: 1, v: "C"},
			{op: "remove", id: "a", evicted: []string{"A"}},
			{op: "remove", id: "a"},
			{op: "clear", evicted: []string{"C", "B"}},
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var released []string
			l := kvstate.NewLocal(tc.cap, func(_ string, v string) { released = append(released, v) })
			for i, s := range tc.steps {
				released = nil
				var v string
				var ok bool
				switch s.op {
				case "put":
					l.Put(s.id, s.rev, s.v)
				case "get":
					v, ok = l.Get(s.id, s.rev)
				case "take":
					v, ok = l.Take(s.id, s.rev)
				case "remove":
					l.Remove(s.id)
				case "clear":
					l.Clear()
				}
				if v != s.wantV || ok != s.wantOK {
					t.Fatalf("step %d %s(%s@%d) = %q %v, want %q %v", i, s.op, s.id, s.rev, v, ok, s.wantV, s.wantOK)
				}
				if !slices.Equal(released, s.evicted) {
					t.Fatalf("step %d %s: released %v, want %v", i, s.op, released, s.evicted)
				}
			}
		})
	}
}

func TestLocalRevisionAndConcurrency(t *testing.T) {
	l := kvstate.NewLocal[int](8, nil)
	if l.Revision("x") != 0 {
		t.Fatal("unknown id must report revision 0")
	}
	var wg sync.WaitGroup
	for i := range 16 {
		wg.Go(func() {
			for r := range uint64(100) {
				id := string(rune('a' + i%4))
				l.Put(id, r, i)
				l.Get(id, r)
				l.Take(id, r)
				_ = l.Revision(id)
			}
		})
	}
	wg.Wait()
	if l.Len() > 8 {
		t.Fatalf("len %d over capacity", l.Len())
	}
}
