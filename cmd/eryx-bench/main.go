// Command eryx-bench measures the platform end to end and prints a table:
// submit → result latency of print(1) with a warm pool, one worker's
// throughput, and the cost of a callback over NATS.
//
// By default it starts everything in-process: an embedded NATS server, a
// worker and a callback service, each on its own connection, so that every
// message crosses the server as in production. With -nats it measures an
// existing deployment instead (its workers, plus a callback service it
// starts there).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"slices"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/eryx-dev/eryx/auth"
	"github.com/eryx-dev/eryx/callbacks"
	"github.com/eryx-dev/eryx/callbacks/catalogue"
	"github.com/eryx-dev/eryx/internal/embednats"
	"github.com/eryx-dev/eryx/jobs"
	"github.com/eryx-dev/eryx/jobs/worker"
	"github.com/eryx-dev/eryx/runtime/pool"
	"github.com/eryx-dev/eryx/runtime/sandbox"
)

type options struct {
	natsURL    string
	latencyN   int
	throughput int
	poolSize   int
	calls      int
	queue      string
	sync       string // the embedded server's sync policy
	syncCost   bool   // measure the cost of sync always against sync
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "eryx-bench:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, out io.Writer) error {
	var o options
	fs := flag.NewFlagSet("eryx-bench", flag.ContinueOnError)
	fs.StringVar(&o.natsURL, "nats", "", "measure an existing deployment at this URL (default: all in-process)")
	fs.IntVar(&o.latencyN, "n", 300, "sequential jobs for the latency figures")
	fs.IntVar(&o.throughput, "throughput", 1000, "jobs for the throughput figure")
	fs.IntVar(&o.poolSize, "pool", runtime.NumCPU(), "pool size of the in-process worker")
	fs.IntVar(&o.calls, "calls", 300, "callback invocations for the callback figures")
	fs.StringVar(&o.queue, "queue", "bench", "queue to use")
	fs.StringVar(&o.sync, "sync", "", "sync policy of the embedded server: always or an interval (default: the server's, 2m)")
	fs.BoolVar(&o.syncCost, "sync-cost", true, "in-process: also measure throughput on a second embedded server with sync always")
	if err := fs.Parse(args); err != nil {
		return err
	}

	url := o.natsURL
	if url == "" {
		dir, err := os.MkdirTemp("", "eryx-bench-")
		if err != nil {
			return err
		}
		defer func() { _ = os.RemoveAll(dir) }()
		ns, err := embednats.Start(embednats.Options{Listen: "127.0.0.1:-1", StoreDir: dir, Sync: o.sync})
		if err != nil {
			return err
		}
		defer ns.Shutdown()
		url = ns.ClientURL()
	}
	connectTo := func(url string) func(string, auth.Role, string) (*nats.Conn, error) {
		return func(name string, role auth.Role, scope string) (*nats.Conn, error) {
			return nats.Connect(url, append([]nats.Option{nats.Name(name)}, auth.ConnectOptions(jobs.DefaultPrefix, role, scope)...)...)
		}
	}
	// Each connection uses its role's inbox prefix, as under the shipped
	// permissions (auth.ConnectOptions).
	connect := func(name string, role auth.Role, scope string) (*nats.Conn, error) {
		return nats.Connect(url, append([]nats.Option{nats.Name(name)}, auth.ConnectOptions(jobs.DefaultPrefix, role, scope)...)...)
	}

	// A callback service that does nothing, to measure the transport.
	svcConn, err := connect("eryx-bench callbacks", auth.RoleCallback, "")
	if err != nil {
		return err
	}
	defer svcConn.Close()
	srv, err := callbacks.Start(ctx, svcConn, callbacks.Service{
		Name: "eryx-bench",
		Callbacks: []callbacks.Def{{
			Name:        "bench_noop",
			Description: "returns its argument",
			Handler:     func(_ context.Context, args json.RawMessage) (any, error) { return args, nil },
		}},
	})
	if err != nil {
		return err
	}
	defer func() { _ = srv.Stop() }()

	var engine *sandbox.Engine
	if o.natsURL == "" {
		fmt.Fprintln(os.Stderr, "starting the runtime and an in-process worker...")
		engine, err = sandbox.NewEngine(ctx, sandbox.Config{})
		if err != nil {
			return err
		}
		defer func() { _ = engine.Close(context.Background()) }()
		stopWorker, err := startWorker(ctx, engine, connect, o)
		if err != nil {
			return err
		}
		defer stopWorker()
	}

	nc, err := connect("eryx-bench client", auth.RoleSubmitter, jobs.DefaultTenant)
	if err != nil {
		return err
	}
	defer nc.Close()
	client, err := jobs.NewClient(nc, jobs.Subjects{})
	if err != nil {
		return err
	}

	var rows [][2]string
	add := func(k, v string) { rows = append(rows, [2]string{k, v}) }

	fmt.Fprintln(os.Stderr, "warming up...")
	if _, err := latencies(ctx, client, o.queue, 30); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "latency: %d sequential print(1) jobs...\n", o.latencyN)
	lat, err := latencies(ctx, client, o.queue, o.latencyN)
	if err != nil {
		return err
	}
	add("submit → result, print(1), p50", msf(pct(lat, 50)))
	add("submit → result, print(1), p90", msf(pct(lat, 90)))
	add("submit → result, print(1), p99", msf(pct(lat, 99)))
	add("submit → result, print(1), max", msf(pct(lat, 100)))

	fmt.Fprintf(os.Stderr, "throughput: %d jobs...\n", o.throughput)
	rate, err := throughput(ctx, nc, client, o.queue, o.throughput)
	if err != nil {
		return err
	}
	label := "throughput, one worker"
	if o.natsURL == "" {
		label = fmt.Sprintf("throughput, one worker (pool %d)", o.poolSize)
	}
	add(label, fmt.Sprintf("%.0f jobs/s", rate))
	pubRate, err := publishRate(ctx, client.JetStream(), 500)
	if err != nil {
		return err
	}
	add("sequential JetStream publishes (file, R1)", fmt.Sprintf("%.0f /s", pubRate))
	if engine != nil && o.syncCost && o.sync != "always" {
		fmt.Fprintf(os.Stderr, "sync cost: %d jobs on a server with sync always...\n", o.throughput)
		alwaysRate, alwaysPub, err := syncAlwaysRates(ctx, engine, connectTo, o)
		if err != nil {
			return err
		}
		add("throughput, sync always", fmt.Sprintf("%.0f jobs/s (%.2f× the default's)", alwaysRate, alwaysRate/rate))
		add("sequential publishes, sync always", fmt.Sprintf("%.0f /s (%.2f× the default's)", alwaysPub, alwaysPub/pubRate))
	}

	fmt.Fprintf(os.Stderr, "callbacks: %d calls over NATS...\n", o.calls)
	remote, err := callbackTimes(ctx, client, o.queue, o.calls)
	if err != nil {
		add("callback over NATS", "failed: "+err.Error())
	} else {
		add("callback over NATS, p50", msf(pct(remote, 50)))
		add("callback over NATS, p99", msf(pct(remote, 99)))
	}
	if engine != nil && err == nil {
		local, err := localCallbackTimes(ctx, engine, o.calls)
		if err != nil {
			return err
		}
		add("callback in-process, p50", msf(pct(local, 50)))
		add("NATS overhead per callback, p50", msf(pct(remote, 50)-pct(local, 50)))
	}

	tw := tabwriter.NewWriter(out, 1, 0, 3, ' ', 0)
	fmt.Fprintf(tw, "METRIC\tVALUE\n")
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%s\n", r[0], r[1])
	}
	fmt.Fprintf(tw, "(%d CPUs, %s)\t\n", runtime.NumCPU(), runtime.Version())
	return tw.Flush()
}

// startWorker runs an in-process worker with a warm pool on its own
// connection.
func startWorker(ctx context.Context, engine *sandbox.Engine, connect func(string, auth.Role, string) (*nats.Conn, error), o options) (func(), error) {
	nc, err := connect("eryx-bench worker", auth.RoleWorker, o.queue)
	if err != nil {
		return nil, err
	}
	p, err := pool.New(ctx, engine, pool.Config{MaxSize: o.poolSize, MinIdle: o.poolSize})
	if err != nil {
		nc.Close()
		return nil, err
	}
	cat := catalogue.New(ctx, nc, catalogue.Options{})
	w, err := worker.New(ctx, nc, p, worker.Config{
		ID: "bench", Queue: o.queue, Concurrency: o.poolSize, Callbacks: cat,
		Topology: jobs.Topology{Storage: jetstream.FileStorage},
	})
	if err != nil {
		nc.Close()
		return nil, err
	}
	wctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { _ = w.Run(wctx); close(done) }()
	return func() {
		cancel()
		<-done
		cat.Close()
		_ = p.Close(context.Background())
		nc.Close()
	}, nil
}

// syncAlwaysRates starts a second embedded server with sync always, and a
// worker on it like the first, and measures the same throughput and
// publish rate there.
func syncAlwaysRates(ctx context.Context, engine *sandbox.Engine, connectTo func(string) func(string, auth.Role, string) (*nats.Conn, error), o options) (jobsRate, pubRate float64, err error) {
	dir, err := os.MkdirTemp("", "eryx-bench-always-")
	if err != nil {
		return 0, 0, err
	}
	defer func() { _ = os.RemoveAll(dir) }()
	ns, err := embednats.Start(embednats.Options{Listen: "127.0.0.1:-1", StoreDir: dir, Sync: "always"})
	if err != nil {
		return 0, 0, err
	}
	defer ns.Shutdown()
	connect := connectTo(ns.ClientURL())
	stopWorker, err := startWorker(ctx, engine, connect, o)
	if err != nil {
		return 0, 0, err
	}
	defer stopWorker()
	nc, err := connect("eryx-bench client (sync always)", auth.RoleSubmitter, jobs.DefaultTenant)
	if err != nil {
		return 0, 0, err
	}
	defer nc.Close()
	client, err := jobs.NewClient(nc, jobs.Subjects{})
	if err != nil {
		return 0, 0, err
	}
	if _, err := latencies(ctx, client, o.queue, 30); err != nil {
		return 0, 0, err
	}
	if jobsRate, err = throughput(ctx, nc, client, o.queue, o.throughput); err != nil {
		return 0, 0, err
	}
	pubRate, err = publishRate(ctx, client.JetStream(), 500)
	return jobsRate, pubRate, err
}

// publishRate publishes n small messages one after the other, each
// waiting for its ack, to a scratch file stream: the storage's cost per
// acknowledged write.
func publishRate(ctx context.Context, js jetstream.JetStream, n int) (float64, error) {
	name := "BENCH_SYNC_" + strings.ToUpper(uuid.NewString()[:8])
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: name, Subjects: []string{"bench.sync." + name}, Storage: jetstream.FileStorage}); err != nil {
		return 0, err
	}
	defer func() { _ = js.DeleteStream(context.Background(), name) }()
	start := time.Now()
	for i := range n {
		if _, err := js.Publish(ctx, "bench.sync."+name, []byte(fmt.Sprint(i))); err != nil {
			return 0, err
		}
	}
	return float64(n) / time.Since(start).Seconds(), nil
}

// latencies runs n print(1) jobs one after the other through the client,
// as eryx-submit does (watch, submit, wait for the result).
func latencies(ctx context.Context, c *jobs.Client, queue string, n int) ([]time.Duration, error) {
	out := make([]time.Duration, 0, n)
	for range n {
		start := time.Now()
		res, err := c.Run(ctx, queue, &jobs.Job{Code: "print(1)"}, jobs.Handlers{})
		if err != nil {
			return nil, err
		}
		if res.Status != jobs.StatusOK || res.Stdout != "1\n" {
			return nil, fmt.Errorf("job %s: %s %q", res.ID, res.Status, res.Stdout)
		}
		out = append(out, time.Since(start))
	}
	return out, nil
}

// throughput submits n jobs at once and measures how fast their results
// come back.
func throughput(ctx context.Context, nc *nats.Conn, c *jobs.Client, queue string, n int) (float64, error) {
	prefix := "tp-" + uuid.NewString()[:8] + "-"
	var mu sync.Mutex
	seen := map[string]bool{}
	done := make(chan struct{})
	sub, err := nc.Subscribe(c.Subjects().Event(c.Tenant(), "*", jobs.EventResult), func(m *nats.Msg) {
		_, id, _, ok := c.Subjects().ParseEvent(m.Subject)
		if !ok || !strings.HasPrefix(id, prefix) {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		seen[id] = true
		if len(seen) == n {
			close(done)
		}
	})
	if err != nil {
		return 0, err
	}
	defer func() { _ = sub.Unsubscribe() }()
	_ = sub.SetPendingLimits(-1, -1)

	js := c.JetStream()
	start := time.Now()
	for i := range n {
		job, _ := json.Marshal(jobs.Job{V: jobs.Version, ID: fmt.Sprintf("%s%d", prefix, i), Code: "print(1)"})
		msg := &nats.Msg{Subject: c.Subjects().Jobs(queue, c.Tenant()), Data: job, Header: nats.Header{}}
		msg.Header.Set(jobs.HeaderMsgID, jobs.MsgID(c.Tenant(), fmt.Sprintf("%s%d", prefix, i)))
		if _, err := js.PublishMsgAsync(msg); err != nil {
			return 0, err
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(time.Minute):
		return 0, errors.New("publishing timed out")
	}
	select {
	case <-done:
	case <-time.After(5 * time.Minute):
		return 0, fmt.Errorf("only %d of %d results after 5 minutes", len(seen), n)
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	return float64(n) / time.Since(start).Seconds(), nil
}

// callbackCode times each call from inside Python, so that the figure is
// the callback's round trip alone.
const callbackCode = `import time
lat = []
for i in range(%d):
    t0 = time.perf_counter()
    await bench_noop(x=i)
    lat.append(time.perf_counter() - t0)
result = lat
`

func callbackTimes(ctx context.Context, c *jobs.Client, queue string, n int) ([]time.Duration, error) {
	res, err := c.Run(ctx, queue, &jobs.Job{Code: fmt.Sprintf(callbackCode, n)}, jobs.Handlers{})
	if err != nil {
		return nil, err
	}
	if res.Status != jobs.StatusOK {
		msg := string(res.Status)
		if res.Error != nil {
			msg += ": " + res.Error.Message
		}
		return nil, errors.New(msg)
	}
	return decodeSeconds(res.Result)
}

// localCallbackTimes runs the same code with an in-process callback.
func localCallbackTimes(ctx context.Context, engine *sandbox.Engine, n int) ([]time.Duration, error) {
	cbs := sandbox.NewCallbacks(sandbox.Callback{
		CallbackSpec: sandbox.CallbackSpec{Name: "bench_noop"},
		Func:         func(_ context.Context, args json.RawMessage) (json.RawMessage, error) { return args, nil },
	})
	res, err := engine.Execute(ctx, fmt.Sprintf(callbackCode, n), sandbox.ExecOptions{Callbacks: cbs})
	if err != nil {
		return nil, err
	}
	if res.Status != sandbox.StatusOK {
		return nil, fmt.Errorf("local callbacks: %s: %w", res.Status, res.Error)
	}
	return decodeSeconds(res.Value)
}

func decodeSeconds(raw json.RawMessage) ([]time.Duration, error) {
	var secs []float64
	if err := json.Unmarshal(raw, &secs); err != nil {
		return nil, err
	}
	out := make([]time.Duration, len(secs))
	for i, s := range secs {
		out[i] = time.Duration(s * float64(time.Second))
	}
	return out, nil
}

// pct is the p-th percentile (nearest rank) of ds.
func pct(ds []time.Duration, p int) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := (p*len(s)+99)/100 - 1
	return s[max(0, min(i, len(s)-1))]
}

func msf(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d.Microseconds())/1000) }
