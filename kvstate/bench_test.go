package kvstate_test

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/eryx-dev/eryx/kvstate"
)

// BenchmarkSnapshot measures committing and loading one session snapshot
// against an embedded JetStream server (file storage in a temp dir): 512
// KiB fits a KV value; 1 MiB, with the default 1 MiB limits, goes through
// the object store.
func BenchmarkSnapshot(b *testing.B) {
	for _, size := range []int{512 << 10, 1 << 20} {
		s := startJS(b)
		st, _ := openStore(b, s, kvstate.Config{})
		data := snapshot(size, 1)
		id := fmt.Sprintf("bench-%d", size)
		rev, err := st.Commit(b.Context(), id, data, 0, kvstate.CommitOptions{})
		if err != nil {
			b.Fatal(err)
		}
		b.Run(fmt.Sprintf("commit/%dKiB", size>>10), func(b *testing.B) {
			b.SetBytes(int64(size))
			lat := make([]time.Duration, 0, b.N)
			for b.Loop() {
				t0 := time.Now()
				if rev, err = st.Commit(b.Context(), id, data, rev, kvstate.CommitOptions{}); err != nil {
					b.Fatal(err)
				}
				lat = append(lat, time.Since(t0))
			}
			reportP50(b, lat)
		})
		b.Run(fmt.Sprintf("load/%dKiB", size>>10), func(b *testing.B) {
			b.SetBytes(int64(size))
			lat := make([]time.Duration, 0, b.N)
			for b.Loop() {
				t0 := time.Now()
				sess, err := st.Load(b.Context(), id)
				if err != nil || len(sess.Data) != size {
					b.Fatal(err)
				}
				lat = append(lat, time.Since(t0))
			}
			reportP50(b, lat)
		})
		b.Run(fmt.Sprintf("load-since-unchanged/%dKiB", size>>10), func(b *testing.B) {
			for b.Loop() {
				if _, err := st.LoadSince(b.Context(), id, rev); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func reportP50(b *testing.B, lat []time.Duration) {
	if len(lat) == 0 {
		return
	}
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Nanoseconds()), "p50-ns")
}
