package sandbox_test

import (
	"context"
	"runtime"
	"testing"
	"time"

	"github.com/eryx-dev/eryx/runtime/assets"
	"github.com/eryx-dev/eryx/runtime/sandbox"
)

// BenchmarkImages puts the two runtime images side by side: what a sandbox
// costs with and without numpy linked in and pre-imported, and what
// importing and using numpy costs in a fresh sandbox.
//
//	go test -run '^$' -bench BenchmarkImages -benchtime 50x ./runtime/sandbox/
func BenchmarkImages(b *testing.B) {
	ctx := context.Background()
	for _, image := range []string{assets.ImageMinimal, assets.ImageNumpy} {
		e := engine
		if image == assets.ImageNumpy {
			e = npEngine(b)
		}
		a, err := assets.LoadImage(image)
		if err != nil {
			b.Fatal(err)
		}
		jobs := []struct{ name, code, stdout string }{
			{"new-sandbox", "", ""},
			{"print-hi", "print('hi')", "hi\n"},
		}
		if image == assets.ImageNumpy {
			jobs = append(jobs,
				struct{ name, code, stdout string }{"import-numpy", "import numpy", ""},
				struct{ name, code, stdout string }{"numpy-job", "import numpy as np\nprint(int(np.arange(1000).sum()))", "499500\n"})
		}
		for _, job := range jobs {
			b.Run(image+"/"+job.name, func(b *testing.B) {
				s := make(samples, 0, b.N)
				var peak uint64
				for i := 0; i < b.N; i++ {
					start := time.Now()
					sb, err := e.NewSandbox(ctx, sandbox.Limits{})
					if err != nil {
						b.Fatal(err)
					}
					if job.code != "" {
						res, err := sb.Execute(ctx, job.code, sandbox.ExecOptions{})
						if err != nil || res.Status != sandbox.StatusOK || res.Stdout != job.stdout {
							b.Fatalf("%v %+v", err, res)
						}
						peak = max(peak, res.Stats.PeakMemoryBytes)
					}
					s = append(s, time.Since(start))
					_ = sb.Close(ctx)
				}
				s.report(b)
				b.ReportMetric(float64(len(a.Module))/(1<<20), "module-MiB")
				b.ReportMetric(float64(e.Stats().ImageBytes)/(1<<20), "image-MiB")
				b.ReportMetric(float64(e.Stats().PreInit.Milliseconds()), "preinit-ms")
				if peak > 0 {
					b.ReportMetric(float64(peak)/(1<<20), "linear-MiB")
				}
			})
		}
		// Resident memory a sandbox adds once it has run a job: many held
		// at once, divided by their number.
		b.Run(image+"/rss-per-sandbox", func(b *testing.B) {
			const n = 20
			var per float64
			for i := 0; i < b.N; i++ {
				runtime.GC()
				before := rssBytes(b)
				held := make([]*sandbox.Sandbox, 0, n)
				for range n {
					sb, err := e.NewSandbox(ctx, sandbox.Limits{})
					if err != nil {
						b.Fatal(err)
					}
					if _, err := sb.Execute(ctx, "print('hi')", sandbox.ExecOptions{}); err != nil {
						b.Fatal(err)
					}
					held = append(held, sb)
				}
				runtime.GC()
				per += float64(rssBytes(b)-before) / n
				for _, sb := range held {
					_ = sb.Close(ctx)
				}
			}
			b.ReportMetric(per/float64(b.N)/(1<<20), "rss-MiB/sandbox")
		})
	}
}
