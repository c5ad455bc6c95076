package sandbox_test

import (
	"context"
	"os"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/eryx-dev/eryx/runtime/sandbox"
)

// jobCost accumulates what the OS says a measured operation cost: CPU time
// (user and system, from getrusage, so the garbage collector and every
// other thread of the process count too), minor page faults and wall time.
type jobCost struct {
	n              int
	user, sys      time.Duration
	minflt, majflt int64
	nvcsw, nivcsw  int64
	wall           []time.Duration
	before         syscall.Rusage
	start          time.Time
}

func (c *jobCost) begin(b *testing.B) {
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &c.before); err != nil {
		b.Fatal(err)
	}
	c.start = time.Now()
}

func (c *jobCost) end(b *testing.B) {
	wall := time.Since(c.start)
	var after syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &after); err != nil {
		b.Fatal(err)
	}
	tv := func(t syscall.Timeval) time.Duration { return time.Duration(t.Nano()) }
	c.n++
	c.user += tv(after.Utime) - tv(c.before.Utime)
	c.sys += tv(after.Stime) - tv(c.before.Stime)
	c.minflt += after.Minflt - c.before.Minflt
	c.majflt += after.Majflt - c.before.Majflt
	c.nvcsw += after.Nvcsw - c.before.Nvcsw
	c.nivcsw += after.Nivcsw - c.before.Nivcsw
	c.wall = append(c.wall, wall)
}

func (c *jobCost) cpuPerJob() time.Duration { return (c.user + c.sys) / time.Duration(max(1, c.n)) }

func (c *jobCost) report(b *testing.B) {
	n := float64(max(1, c.n))
	sort.Slice(c.wall, func(i, j int) bool { return c.wall[i] < c.wall[j] })
	pct := func(p float64) float64 {
		return float64(c.wall[min(len(c.wall)-1, int(float64(len(c.wall))*p))].Nanoseconds()) / 1e3
	}
	b.ReportMetric(float64(c.user.Microseconds())/n, "user-us/job")
	b.ReportMetric(float64(c.sys.Microseconds())/n, "sys-us/job")
	b.ReportMetric(float64(c.minflt)/n, "faults/job")
	b.ReportMetric(float64(c.nvcsw+c.nivcsw)/n, "ctxsw/job")
	b.ReportMetric(pct(0.50), "p50-us")
	b.ReportMetric(pct(0.99), "p99-us")
}

// costJobs is how many jobs each case measures, whatever b.N: percentiles
// and per-job CPU need a few hundred.
func costJobs(b *testing.B) int { return max(b.N, 300) }

// BenchmarkJobCost is issue #18's table: what one job costs the process on
// a slot reset in place, against a new sandbox per job, in the same run.
func BenchmarkJobCost(b *testing.B) {
	ctx := context.Background()
	const code = "print('hi')"
	check := func(res *sandbox.Result, err error) {
		if err != nil || res.Stdout != "hi\n" {
			b.Fatalf("%v %+v", err, res)
		}
	}
	costs := map[string]*jobCost{}
	if engine.SlotReset() {
		b.Run("reset-only", func(b *testing.B) {
			sb, err := engine.NewSandbox(ctx, sandbox.Limits{})
			if err != nil {
				b.Fatal(err)
			}
			defer func() { _ = sb.Close(ctx) }()
			c := &jobCost{}
			for range costJobs(b) {
				res, err := sb.Execute(ctx, code, sandbox.ExecOptions{})
				check(res, err)
				c.begin(b)
				if err := sb.Reset(ctx); err != nil {
					b.Fatal(err)
				}
				c.end(b)
			}
			c.report(b)
			costs["reset-only"] = c
		})
		b.Run("print-hi-reset-slot", func(b *testing.B) {
			sb, err := engine.NewSandbox(ctx, sandbox.Limits{})
			if err != nil {
				b.Fatal(err)
			}
			defer func() { _ = sb.Close(ctx) }()
			c := &jobCost{}
			for range costJobs(b) {
				c.begin(b)
				res, err := sb.Execute(ctx, code, sandbox.ExecOptions{})
				check(res, err)
				if err := sb.Reset(ctx); err != nil {
					b.Fatal(err)
				}
				c.end(b)
			}
			c.report(b)
			costs["slot"] = c
		})
	}
	b.Run("print-hi-fresh-sandbox", func(b *testing.B) {
		c := &jobCost{}
		for range costJobs(b) {
			c.begin(b)
			check(engine.Execute(ctx, code, sandbox.ExecOptions{}))
			c.end(b)
		}
		c.report(b)
		costs["fresh"] = c
	})
	if engine.SlotReset() {
		b.Run("idle-slot-rss", func(b *testing.B) {
			const slots = 20
			before := rssBytes(b)
			var sbs []*sandbox.Sandbox
			for range slots {
				sb, err := engine.NewSandbox(ctx, sandbox.Limits{})
				if err != nil {
					b.Fatal(err)
				}
				sbs = append(sbs, sb)
				for range 3 {
					res, err := sb.Execute(ctx, code, sandbox.ExecOptions{})
					check(res, err)
					if err := sb.Reset(ctx); err != nil {
						b.Fatal(err)
					}
				}
			}
			b.ReportMetric(float64(rssBytes(b)-before)/slots/1024, "KiB-rss/idle-slot")
			for _, sb := range sbs {
				_ = sb.Close(ctx)
			}
		})
	}
	if s, f := costs["slot"], costs["fresh"]; s != nil && f != nil {
		b.Logf("CPU per print('hi') job: reset slot %v, fresh sandbox %v: %.1fx less",
			s.cpuPerJob(), f.cpuPerJob(), float64(f.cpuPerJob())/float64(max(1, s.cpuPerJob())))
	}
}

// rssBytes is the process's resident set, from /proc/self/statm.
func rssBytes(b *testing.B) int64 {
	raw, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		b.Skip(err)
	}
	f := strings.Fields(string(raw))
	pages, err := strconv.ParseInt(f[1], 10, 64)
	if err != nil {
		b.Fatal(err)
	}
	return pages * int64(os.Getpagesize())
}
