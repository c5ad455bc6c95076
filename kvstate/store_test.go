package kvstate_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/eryx-dev/eryx/internal/testenv"
	"github.com/eryx-dev/eryx/kvstate"
)

// startJS runs an embedded nats-server with JetStream in a temp dir.
func startJS(t testing.TB) *server.Server {
	t.Helper()
	s, err := server.NewServer(&server.Options{
		Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true,
		JetStream: true, StoreDir: t.TempDir(),
	})
	if err != nil {
		t.Fatal(err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	return s
}

// openStore connects anew, as a separate worker would.
func openStore(t testing.TB, s *server.Server, cfg kvstate.Config) (*kvstate.Store, jetstream.JetStream) {
	t.Helper()
	nc, err := nats.Connect(s.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	st, err := kvstate.Open(context.Background(), js, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return st, js
}

func snapshot(n int, seed uint64) []byte {
	b := make([]byte, n)
	r := rand.New(rand.NewPCG(seed, seed))
	for i := range b {
		b[i] = byte(r.UintN(256))
	}
	return b
}

func countBlobs(t *testing.T, js jetstream.JetStream) int {
	t.Helper()
	obs, err := js.ObjectStore(t.Context(), kvstate.DefaultBlobBucket)
	if err != nil {
		t.Fatal(err)
	}
	objs, err := obs.List(t.Context())
	if errors.Is(err, jetstream.ErrNoObjectsFound) {
		return 0
	}
	if err != nil {
		t.Fatal(err)
	}
	return len(objs)
}

func TestCommitLoadRoundTrip(t *testing.T) {
	s := startJS(t)
	st, js := openStore(t, s, kvstate.Config{MaxValueSize: 64 << 10})
	tests := []struct {
		name     string
		size     int
		wantBlob bool
	}{
		{"empty", 0, false},
		{"small", 100, false},
		{"near the inline limit", 60 << 10, false},
		{"over the inline limit", 64 << 10, true},
		{"5 MiB", 5 << 20, true},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			id := fmt.Sprintf("sess-%d", i)
			first := snapshot(tc.size, uint64(i))
			rev1, err := st.Commit(t.Context(), id, first, 0, kvstate.CommitOptions{Worker: "w1"})
			if err != nil {
				t.Fatal(err)
			}
			got, err := st.Load(t.Context(), id)
			if err != nil {
				t.Fatal(err)
			}
			if got.Revision != rev1 || !bytes.Equal(got.Data, first) || got.Worker != "w1" || got.Size != int64(tc.size) || got.Commits != 1 {
				t.Fatalf("loaded %s rev %d size %d worker %s commits %d; want rev %d size %d", got.ID, got.Revision, got.Size, got.Worker, got.Commits, rev1, tc.size)
			}
			if (got.Blob != "") != tc.wantBlob {
				t.Fatalf("blob = %q, want blob %v", got.Blob, tc.wantBlob)
			}
			if got.TTL != kvstate.DefaultTTL || got.ExpiresAt().Before(time.Now().Add(23*time.Hour)) {
				t.Fatalf("ttl = %v, expires %v", got.TTL, got.ExpiresAt())
			}

			// A second commit from another worker at the loaded revision.
			second := snapshot(tc.size, uint64(i)+100)
			rev2, err := st.Commit(t.Context(), id, second, got.Revision, kvstate.CommitOptions{Worker: "w2", TTL: time.Hour})
			if err != nil {
				t.Fatal(err)
			}
			info, err := st.Info(t.Context(), id)
			if err != nil {
				t.Fatal(err)
			}
			if info.Data != nil || info.Revision != rev2 || info.Commits != 2 || info.Worker != "w2" ||
				!info.Created.Equal(got.Created) || info.TTL != time.Hour || info.LastUsed.Before(got.LastUsed) {
				t.Fatalf("info after 2nd commit = %+v", info)
			}
			again, err := st.Load(t.Context(), id)
			if err != nil || !bytes.Equal(again.Data, second) {
				t.Fatalf("reload: %v", err)
			}
		})
	}
	// Replaced blobs are deleted: one blob per big session remains.
	if n := countBlobs(t, js); n != 2 {
		t.Fatalf("%d blobs, want 2", n)
	}
}

func TestConcurrentCommitsExactlyOneWins(t *testing.T) {
	s := startJS(t)
	// Two workers, each with its own connection and store.
	a, _ := openStore(t, s, kvstate.Config{MaxValueSize: 32 << 10})
	b, _ := openStore(t, s, kvstate.Config{MaxValueSize: 32 << 10})
	tests := []struct {
		name   string
		size   int
		create bool // both start from "no session"
	}{
		{"inline", 1 << 10, false},
		{"blob", 256 << 10, false},
		{"create race", 1 << 10, true},
		{"create race blob", 256 << 10, true},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			id := fmt.Sprintf("race-%d", i)
			var base uint64
			if !tc.create {
				var err error
				if base, err = a.Commit(t.Context(), id, []byte("x = 41"), 0, kvstate.CommitOptions{}); err != nil {
					t.Fatal(err)
				}
			}
			for round := range 5 {
				// Both jobs ran on state `base`; both try to commit.
				datas := [][]byte{snapshot(tc.size, uint64(round)), snapshot(tc.size, uint64(round)+1000)}
				var wg sync.WaitGroup
				var revs [2]uint64
				var errs [2]error
				start := make(chan struct{})
				for w, st := range []*kvstate.Store{a, b} {
					wg.Go(func() {
						<-start
						revs[w], errs[w] = st.Commit(t.Context(), id, datas[w], base, kvstate.CommitOptions{Worker: fmt.Sprint(w)})
					})
				}
				close(start)
				wg.Wait()
				winner := -1
				for w, err := range errs {
					switch {
					case err == nil:
						if winner != -1 {
							t.Fatalf("round %d: both commits succeeded", round)
						}
						winner = w
					case !errors.Is(err, kvstate.ErrConflict):
						t.Fatalf("round %d: loser error %v, want ErrConflict", round, err)
					}
				}
				if winner == -1 {
					t.Fatalf("round %d: no commit succeeded: %v", round, errs)
				}
				got, err := b.Load(t.Context(), id)
				if err != nil {
					t.Fatal(err)
				}
				if got.Revision != revs[winner] || !bytes.Equal(got.Data, datas[winner]) {
					t.Fatalf("round %d: stored state is not the winner's", round)
				}
				base = got.Revision
				if tc.create {
					break // creation races once; later rounds would be updates
				}
			}
		})
	}
}

func TestStaleCommitAfterOtherWorker(t *testing.T) {
	s := startJS(t)
	a, _ := openStore(t, s, kvstate.Config{})
	b, _ := openStore(t, s, kvstate.Config{})
	rev, err := a.Commit(t.Context(), "s", []byte("1"), 0, kvstate.CommitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Commit(t.Context(), "s", []byte("2"), rev, kvstate.CommitOptions{}); err != nil {
		t.Fatal(err)
	}
	// a still believes the session is at rev (its cache says so).
	if _, err := a.Commit(t.Context(), "s", []byte("3"), rev, kvstate.CommitOptions{}); !errors.Is(err, kvstate.ErrConflict) {
		t.Fatalf("stale commit: %v, want ErrConflict", err)
	}
	// Creating an existing session is a conflict too.
	if _, err := a.Commit(t.Context(), "s", []byte("4"), 0, kvstate.CommitOptions{}); !errors.Is(err, kvstate.ErrConflict) {
		t.Fatalf("create over existing: %v, want ErrConflict", err)
	}
	// And expecting a session that never existed.
	if _, err := a.Commit(t.Context(), "ghost", []byte("5"), 42, kvstate.CommitOptions{}); !errors.Is(err, kvstate.ErrConflict) {
		t.Fatalf("update of missing: %v, want ErrConflict", err)
	}
}

func TestTooLarge(t *testing.T) {
	s := startJS(t)
	st, js := openStore(t, s, kvstate.Config{MaxValueSize: 16 << 10, MaxSnapshotSize: 1 << 20})
	tests := []struct {
		size    int
		wantErr error
	}{
		{1 << 20, nil},
		{1<<20 + 1, kvstate.ErrTooLarge},
		{8 << 20, kvstate.ErrTooLarge},
	}
	for i, tc := range tests {
		_, err := st.Commit(t.Context(), fmt.Sprintf("big-%d", i), make([]byte, tc.size), 0, kvstate.CommitOptions{})
		if !errors.Is(err, tc.wantErr) {
			t.Fatalf("size %d: err %v, want %v", tc.size, err, tc.wantErr)
		}
	}
	if n := countBlobs(t, js); n != 1 {
		t.Fatalf("%d blobs, want 1 (refused snapshots upload nothing)", n)
	}
}

func TestDefaultCapIs64MiB(t *testing.T) {
	s := startJS(t)
	st, _ := openStore(t, s, kvstate.Config{})
	if got := st.Config().MaxSnapshotSize; got != 64<<20 {
		t.Fatalf("default cap %d", got)
	}
	_, err := st.Commit(t.Context(), "huge", make([]byte, 64<<20+1), 0, kvstate.CommitOptions{})
	if !errors.Is(err, kvstate.ErrTooLarge) {
		t.Fatalf("err %v", err)
	}
}

func TestDelete(t *testing.T) {
	s := startJS(t)
	st, js := openStore(t, s, kvstate.Config{MaxValueSize: 16 << 10})
	for _, size := range []int{10, 100 << 10} {
		id := fmt.Sprintf("del-%d", size)
		rev, err := st.Commit(t.Context(), id, make([]byte, size), 0, kvstate.CommitOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if err := st.Delete(t.Context(), id); err != nil {
			t.Fatal(err)
		}
		if _, err := st.Load(t.Context(), id); !errors.Is(err, kvstate.ErrNotFound) {
			t.Fatalf("load after delete: %v", err)
		}
		if err := st.Delete(t.Context(), id); !errors.Is(err, kvstate.ErrNotFound) {
			t.Fatalf("second delete: %v", err)
		}
		// A job that started before the delete cannot resurrect the session.
		if _, err := st.Commit(t.Context(), id, []byte("late"), rev, kvstate.CommitOptions{}); !errors.Is(err, kvstate.ErrConflict) {
			t.Fatalf("commit after delete: %v, want ErrConflict", err)
		}
		// A new session under the same id starts over.
		if _, err := st.Commit(t.Context(), id, []byte("new"), 0, kvstate.CommitOptions{}); err != nil {
			t.Fatalf("recreate: %v", err)
		}
		got, err := st.Load(t.Context(), id)
		if err != nil || string(got.Data) != "new" || got.Commits != 1 {
			t.Fatalf("recreated: %+v, %v", got, err)
		}
	}
	if n := countBlobs(t, js); n != 0 {
		t.Fatalf("%d blobs left after deletes", n)
	}
}

func TestTTLExpiry(t *testing.T) {
	s := startJS(t)
	st, _ := openStore(t, s, kvstate.Config{MaxValueSize: 16 << 10})
	for _, size := range []int{10, 100 << 10} {
		id := fmt.Sprintf("ttl-%d", size)
		if _, err := st.Commit(t.Context(), id, make([]byte, size), 0, kvstate.CommitOptions{TTL: time.Second}); err != nil {
			t.Fatal(err)
		}
		if _, err := st.Load(t.Context(), id); err != nil {
			t.Fatalf("fresh session: %v", err)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for _, size := range []int{10, 100 << 10} {
		id := fmt.Sprintf("ttl-%d", size)
		for {
			_, err := st.Load(t.Context(), id)
			if errors.Is(err, kvstate.ErrNotFound) {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s did not expire", id)
			}
			time.Sleep(100 * time.Millisecond)
		}
		// An expired id can be created again (over the expiry marker).
		if _, err := st.Commit(t.Context(), id, []byte("again"), 0, kvstate.CommitOptions{}); err != nil {
			t.Fatalf("recreate after expiry: %v", err)
		}
	}
}

func TestSweepRemovesOrphans(t *testing.T) {
	s := startJS(t)
	st, js := openStore(t, s, kvstate.Config{MaxValueSize: 16 << 10, SweepGrace: time.Nanosecond})
	if _, err := st.Commit(t.Context(), "live", make([]byte, 100<<10), 0, kvstate.CommitOptions{}); err != nil {
		t.Fatal(err)
	}
	obs, err := js.ObjectStore(t.Context(), kvstate.DefaultBlobBucket)
	if err != nil {
		t.Fatal(err)
	}
	// Orphans: an interrupted commit's upload and an expired session's blob.
	for _, name := range []string{"live/interrupted", "gone/blob"} {
		if _, err := obs.PutBytes(t.Context(), name, []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	n, err := st.Sweep(t.Context())
	if err != nil || n != 2 {
		t.Fatalf("Sweep = %d, %v; want 2", n, err)
	}
	if _, err := st.Load(t.Context(), "live"); err != nil {
		t.Fatalf("live session damaged by sweep: %v", err)
	}
}

func TestMissingBlobIsCorrupt(t *testing.T) {
	s := startJS(t)
	st, js := openStore(t, s, kvstate.Config{MaxValueSize: 16 << 10})
	if _, err := st.Commit(t.Context(), "c", make([]byte, 100<<10), 0, kvstate.CommitOptions{}); err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(t.Context(), "c")
	if err != nil {
		t.Fatal(err)
	}
	obs, _ := js.ObjectStore(t.Context(), kvstate.DefaultBlobBucket)
	if err := obs.Delete(t.Context(), info.Blob); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Load(t.Context(), "c"); !errors.Is(err, kvstate.ErrCorrupt) {
		t.Fatalf("load with lost blob: %v, want ErrCorrupt", err)
	}
}

func TestLoadSince(t *testing.T) {
	s := startJS(t)
	st, _ := openStore(t, s, kvstate.Config{MaxValueSize: 16 << 10})
	for _, size := range []int{10, 100 << 10} {
		id := fmt.Sprintf("since-%d", size)
		rev, err := st.Commit(t.Context(), id, make([]byte, size), 0, kvstate.CommitOptions{})
		if err != nil {
			t.Fatal(err)
		}
		same, err := st.LoadSince(t.Context(), id, rev)
		if err != nil || same.Data != nil || same.Revision != rev {
			t.Fatalf("unchanged: %+v, %v", same, err)
		}
		rev2, err := st.Commit(t.Context(), id, bytes.Repeat([]byte{7}, size), rev, kvstate.CommitOptions{})
		if err != nil {
			t.Fatal(err)
		}
		moved, err := st.LoadSince(t.Context(), id, rev)
		if err != nil || moved.Revision != rev2 || len(moved.Data) != size {
			t.Fatalf("moved: rev %d len %d, %v", moved.Revision, len(moved.Data), err)
		}
	}
}

func TestListAndInvalidIDs(t *testing.T) {
	s := startJS(t)
	st, js := openStore(t, s, kvstate.Config{})
	if got, err := st.List(t.Context()); err != nil || len(got) != 0 {
		t.Fatalf("empty list: %v, %v", got, err)
	}
	for _, id := range []string{"b", "a", "user-1.chat_2"} {
		if _, err := st.Commit(t.Context(), id, []byte(id), 0, kvstate.CommitOptions{Worker: "w"}); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.Delete(t.Context(), "b"); err != nil {
		t.Fatal(err)
	}
	// An entry written by hand is not a session: List leaves it out.
	kv, err := js.KeyValue(t.Context(), kvstate.DefaultBucket)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(t.Context(), "by-hand", []byte("x")); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Load(t.Context(), "by-hand"); !errors.Is(err, kvstate.ErrCorrupt) {
		t.Fatalf("load of a foreign entry: %v, want ErrCorrupt", err)
	}
	got, err := st.List(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].ID != "a" || got[1].ID != "user-1.chat_2" || got[0].Data != nil || got[0].Worker != "w" {
		t.Fatalf("list = %+v", got)
	}

	for _, id := range []string{"", "a b", "a/b", "a.", ".a", "a..b", "*", ">", "ü", string(make([]byte, 300))} {
		if _, err := st.Commit(t.Context(), id, nil, 0, kvstate.CommitOptions{}); !errors.Is(err, kvstate.ErrInvalidID) {
			t.Errorf("Commit(%q): %v, want ErrInvalidID", id, err)
		}
		if _, err := st.Load(t.Context(), id); !errors.Is(err, kvstate.ErrInvalidID) {
			t.Errorf("Load(%q): %v, want ErrInvalidID", id, err)
		}
	}
}

func TestOpenEnablesPerKeyTTLOnExistingBucket(t *testing.T) {
	s := startJS(t)
	nc, err := nats.Connect(s.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	// A bucket made by hand without per-message TTL.
	if _, err := js.CreateKeyValue(t.Context(), jetstream.KeyValueConfig{Bucket: kvstate.DefaultBucket}); err != nil {
		t.Fatal(err)
	}
	st, _ := openStore(t, s, kvstate.Config{})
	if _, err := st.Commit(t.Context(), "s", []byte("x"), 0, kvstate.CommitOptions{TTL: time.Minute}); err != nil {
		t.Fatalf("commit with TTL on an upgraded bucket: %v", err)
	}
	// Two stores opening concurrently on a fresh server both succeed.
	s2 := startJS(t)
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() {
			nc, err := nats.Connect(s2.ClientURL())
			if err != nil {
				t.Error(err)
				return
			}
			defer nc.Close()
			js, _ := jetstream.New(nc)
			if _, err := kvstate.Open(context.Background(), js, kvstate.Config{}); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
}

// TestLoadChecksSizesBeforeDownloading attacks Load with entries and
// blobs that lie about their size (row 5 of issue #10, scaled: a 20 MiB
// blob against a 1 MiB limit stands for 300 MiB against 10 MiB). Nothing
// beyond the limit may be downloaded: the entry's size is checked first,
// then the object's info, then the bytes as they arrive.
func TestLoadChecksSizesBeforeDownloading(t *testing.T) {
	const limit = 1 << 20
	s := startJS(t)
	st, js := openStore(t, s, kvstate.Config{MaxSnapshotSize: limit, MaxValueSize: 64 << 10})
	ctx := context.Background()
	obs, err := js.ObjectStore(ctx, kvstate.DefaultBlobBucket)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := obs.PutBytes(ctx, "s/big", snapshot(20<<20, 1)); err != nil {
		t.Fatal(err)
	}
	forgeEntry := func(size int64, blob string) {
		t.Helper()
		meta, _ := json.Marshal(kvstate.Meta{Size: size, Blob: blob, TTL: time.Hour})
		msg := nats.NewMsg("$KV." + kvstate.DefaultBucket + ".s")
		msg.Header.Set(kvstate.HeaderMeta, string(meta))
		if _, err := js.PublishMsg(ctx, msg); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name     string
		forge    func()
		maxBytes uint64 // downloaded at most
	}{
		{"entry claims 300 MiB", func() { forgeEntry(300<<20, "s/big") }, 64 << 10},
		{"object info says 20 MiB", func() { forgeEntry(512<<10, "s/big") }, 64 << 10},
		{"entry and object info both lie", func() {
			forgeEntry(512<<10, "s/big")
			testenv.ForgeObjectSize(t, js, kvstate.DefaultBlobBucket, "s/big", 512<<10)
		}, 4 << 20},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.forge()
			before := js.Conn().Stats().InBytes
			_, err := st.Load(ctx, "s")
			got := js.Conn().Stats().InBytes - before
			if !errors.Is(err, kvstate.ErrTooLarge) {
				t.Fatalf("Load: %v, want ErrTooLarge", err)
			}
			if got > tc.maxBytes {
				t.Fatalf("downloaded %d bytes, want at most %d", got, tc.maxBytes)
			}
			t.Logf("refused after %d bytes: %v", got, err)
		})
	}
}

// A store with a MAC key refuses snapshots it did not tag: edited in KV,
// replaced in the object store, copied from another session, or written
// without the key. What it tagged itself loads.
func TestIntegrityTag(t *testing.T) {
	key := bytes.Repeat([]byte("k"), kvstate.MinMACKeyBytes)
	s := startJS(t)
	ctx := context.Background()
	cfg := kvstate.Config{MACKey: key, MaxValueSize: 64 << 10}
	st, js := openStore(t, s, cfg)
	kv, err := js.KeyValue(ctx, kvstate.DefaultBucket)
	if err != nil {
		t.Fatal(err)
	}
	obs, err := js.ObjectStore(ctx, kvstate.DefaultBlobBucket)
	if err != nil {
		t.Fatal(err)
	}
	// rewrite replaces an entry's value, keeping its metadata (and tag).
	rewrite := func(id string, value []byte) {
		t.Helper()
		e, err := js.Conn().Request("$JS.API.DIRECT.GET.KV_"+kvstate.DefaultBucket+".$KV."+kvstate.DefaultBucket+"."+id, nil, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		msg := nats.NewMsg("$KV." + kvstate.DefaultBucket + "." + id)
		msg.Header.Set(kvstate.HeaderMeta, e.Header.Get(kvstate.HeaderMeta))
		msg.Data = value
		if _, err := js.PublishMsg(ctx, msg); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name   string
		size   int
		attack func(id string, orig []byte)
	}{
		{"inline value edited", 1 << 10, func(id string, orig []byte) {
			evil := bytes.Clone(orig)
			evil[0] ^= 1
			rewrite(id, evil)
		}},
		{"blob replaced", 256 << 10, func(id string, orig []byte) {
			info, err := st.Info(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			evil := bytes.Clone(orig)
			evil[len(evil)-1] ^= 1
			if _, err := obs.PutBytes(ctx, info.Blob, evil); err != nil {
				t.Fatal(err)
			}
		}},
		{"entry written without the key", 1 << 10, func(id string, orig []byte) {
			plain, _ := openStore(t, s, kvstate.Config{MaxValueSize: 64 << 10})
			info, err := plain.Info(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := plain.Commit(ctx, id, orig, info.Revision, kvstate.CommitOptions{}); err != nil {
				t.Fatal(err)
			}
		}},
		{"another session's tagged snapshot copied in", 1 << 10, func(id string, orig []byte) {
			other := id + "-other"
			if _, err := st.Commit(ctx, other, snapshot(1<<10, 99), 0, kvstate.CommitOptions{}); err != nil {
				t.Fatal(err)
			}
			if _, err := kv.Get(ctx, other); err != nil {
				t.Fatal(err)
			}
			src, err := js.Conn().Request("$JS.API.DIRECT.GET.KV_"+kvstate.DefaultBucket+".$KV."+kvstate.DefaultBucket+"."+other, nil, 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			msg := nats.NewMsg("$KV." + kvstate.DefaultBucket + "." + id)
			msg.Header.Set(kvstate.HeaderMeta, src.Header.Get(kvstate.HeaderMeta))
			msg.Data = src.Data
			if _, err := js.PublishMsg(ctx, msg); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			id := fmt.Sprintf("acme.s%d", i)
			data := snapshot(tc.size, uint64(i))
			if _, err := st.Commit(ctx, id, data, 0, kvstate.CommitOptions{}); err != nil {
				t.Fatal(err)
			}
			got, err := st.Load(ctx, id)
			if err != nil || !bytes.Equal(got.Data, data) {
				t.Fatalf("untouched: %v", err)
			}
			tc.attack(id, data)
			// A fresh store (another worker) has no cached head.
			other, _ := openStore(t, s, cfg)
			for _, store := range []*kvstate.Store{st, other} {
				if sess, err := store.Load(ctx, id); !errors.Is(err, kvstate.ErrTampered) {
					t.Fatalf("Load after the attack: %v (data %d bytes), want ErrTampered", err, len(sess.Data))
				}
			}
		})
	}
	if _, err := kvstate.Open(ctx, js, kvstate.Config{MACKey: []byte("short")}); err == nil {
		t.Error("a 5-byte key was accepted")
	}
}

// Blobs of a tenant's session are named under the tenant.
func TestBlobNamesFollowTheTenant(t *testing.T) {
	s := startJS(t)
	st, _ := openStore(t, s, kvstate.Config{MaxValueSize: 64 << 10, SweepGrace: time.Nanosecond})
	ctx := context.Background()
	if _, err := st.Commit(ctx, "acme.s1", snapshot(256<<10, 1), 0, kvstate.CommitOptions{}); err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx, "acme.s1")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(info.Blob, "acme/s1/") {
		t.Errorf("blob %q, want it under acme/s1/", info.Blob)
	}
	// Sweep maps the blob back to its session: it is in use, so kept.
	if n, err := st.Sweep(ctx); err != nil || n != 0 {
		t.Errorf("Sweep removed %d (%v)", n, err)
	}
}
