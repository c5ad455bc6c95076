package pool_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/eryx-dev/eryx/runtime/pool"
	"github.com/eryx-dev/eryx/runtime/sandbox"
)

// BenchmarkThroughput runs trivial jobs through a warm pool with as many
// workers as the pool has sandboxes, and reports jobs per second.
func BenchmarkThroughput(b *testing.B) {
	ctx := context.Background()
	p, err := pool.New(ctx, engine, pool.Config{MaxSize: 4, MinIdle: 4})
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = p.Close(ctx) }()
	for p.Stats().Idle < 4 { // measure a warm pool
		time.Sleep(time.Millisecond)
	}
	jobs := make(chan struct{})
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range jobs {
				sb, err := p.Acquire(ctx)
				if err != nil {
					b.Error(err)
					return
				}
				if _, err := sb.Execute(ctx, "x = 1 + 1", sandbox.ExecOptions{}); err != nil {
					b.Error(err)
				}
				p.Release(sb)
			}
		}()
	}
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		jobs <- struct{}{}
	}
	close(jobs)
	wg.Wait()
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "jobs/s")
}
