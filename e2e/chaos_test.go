package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/eryx-dev/eryx/callbacks"
	"github.com/eryx-dev/eryx/internal/check"
	"github.com/eryx-dev/eryx/internal/embednats"
	"github.com/eryx-dev/eryx/jobs"
)

// The chaos run (issue #13): a 3-node JetStream cluster on loopback
// (embedded servers in this process, so that one can be shut down and
// started again on its ports and store), streams and buckets at 3
// replicas, three eryx-worker processes, a callback service, and a load
// of quick prints, sleeping jobs calling the callback service and session
// jobs incrementing counters in a few shared sessions, with malformed
// jobs, cancels of unknown ids and duplicate submissions mixed in. While
// it runs: SIGKILL a random worker and restart it, rolling SIGTERM
// restarts, shut one NATS node down and bring it back, stop and restart
// the callback service. Then, from the streams: every accepted job has
// exactly one result, the jobs stream is empty, no dead letters, session
// counters equal their ok increments, and every SIGTERM ended in a clean
// exit.
//
// ERYX_CHAOS_JOBS sets the load (default 300, `make chaos` 2000) and
// ERYX_CHAOS_RATE the submissions per second (default 20).

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = ln.Close() }()
	return ln.Addr().String()
}

// natsNode is one cluster member that can be stopped and started again.
type natsNode struct {
	name, dir, client, route string
	routes                   []string
	mu                       sync.Mutex
	ns                       *server.Server
}

func (n *natsNode) start() error {
	ns, err := embednats.Start(embednats.Options{Listen: n.client, StoreDir: n.dir, ServerName: n.name,
		Cluster: &embednats.Cluster{Name: "eryx-chaos", Listen: n.route, Routes: n.routes}})
	if err != nil {
		return err
	}
	n.mu.Lock()
	n.ns = ns
	n.mu.Unlock()
	return nil
}

func (n *natsNode) stop() {
	n.mu.Lock()
	ns := n.ns
	n.ns = nil
	n.mu.Unlock()
	if ns != nil {
		ns.Shutdown()
		ns.WaitForShutdown()
	}
}

// chaosWorker is one eryx-worker process slot, restarted at will.
type chaosWorker struct {
	id   string
	env  []string
	logs *syncBuffer // every incarnation's output

	mu   sync.Mutex
	proc *workerProc
	n    int // incarnations
}

func (w *chaosWorker) start() error {
	w.mu.Lock()
	w.n++
	n := w.n
	w.mu.Unlock()
	cmd := exec.Command(filepath.Join(bin, "eryx-worker"))
	cmd.Env = append(os.Environ(), w.env...)
	cmd.Env = append(cmd.Env, "ERYX_WORKER_ID="+w.id)
	mark := fmt.Sprintf("--- %s incarnation %d\n", w.id, n)
	_, _ = w.logs.Write([]byte(mark))
	own := &syncBuffer{}
	out := multiWriter{own, w.logs}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		return err
	}
	p := &workerProc{cmd: cmd, logs: own, exited: make(chan struct{})}
	go func() { p.err = cmd.Wait(); close(p.exited) }()
	w.mu.Lock()
	w.proc = p
	w.mu.Unlock()
	deadline := time.Now().Add(90 * time.Second)
	for !strings.Contains(own.String(), "worker started") {
		if time.Now().After(deadline) {
			return fmt.Errorf("worker %s not ready after 90s", w.id)
		}
		if err, exited := p.wait(20 * time.Millisecond); exited {
			return fmt.Errorf("worker %s exited at start: %w", w.id, err)
		}
	}
	return nil
}

func (w *chaosWorker) current() *workerProc {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.proc
}

// kill SIGKILLs the worker and waits for it to be gone.
func (w *chaosWorker) kill() {
	if p := w.current(); p != nil {
		_ = p.cmd.Process.Signal(syscall.SIGKILL)
		<-p.exited
	}
}

// term SIGTERMs the worker and reports whether it exited cleanly (status
// 0) within its drain timeout and a margin.
func (w *chaosWorker) term() error {
	p := w.current()
	if p == nil {
		return nil
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	err, exited := p.wait(60 * time.Second)
	if !exited {
		_ = p.cmd.Process.Signal(syscall.SIGKILL)
		<-p.exited
		return fmt.Errorf("worker %s did not exit within 60s of SIGTERM", w.id)
	}
	if err != nil {
		return fmt.Errorf("worker %s exited with %w after SIGTERM", w.id, err)
	}
	return nil
}

type multiWriter []interface{ Write([]byte) (int, error) }

func (m multiWriter) Write(p []byte) (int, error) {
	for _, w := range m {
		_, _ = w.Write(p)
	}
	return len(p), nil
}

// submitted is what the load generator knows of one accepted job.
type submitted struct {
	kind    string
	session string
	at      time.Time
}

type faultCounts struct {
	kills, terms, natsBounces, callbackBounces atomic.Int64
	malformed, ghostCancels, duplicates        atomic.Int64
}

func TestChaos(t *testing.T) {
	if testing.Short() {
		t.Skip("chaos run skipped in -short mode")
	}
	nJobs := envInt("ERYX_CHAOS_JOBS", 300)
	rate := envInt("ERYX_CHAOS_RATE", 20)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	// The cluster.
	nodes := make([]*natsNode, 3)
	for i := range nodes {
		nodes[i] = &natsNode{name: fmt.Sprintf("n%d", i+1), dir: t.TempDir(), client: freeAddr(t), route: freeAddr(t)}
	}
	var urls []string
	for _, n := range nodes {
		urls = append(urls, "nats://"+n.client)
		for _, o := range nodes {
			if o != n {
				n.routes = append(n.routes, "nats-route://"+o.route)
			}
		}
	}
	var startErr sync.WaitGroup
	errs := make([]error, len(nodes))
	for i, n := range nodes {
		startErr.Add(1)
		go func() { defer startErr.Done(); errs[i] = n.start() }()
	}
	startErr.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		for _, n := range nodes {
			n.stop()
		}
	})
	allURLs := strings.Join(urls, ",")
	connect := func(name string) *nats.Conn {
		nc, err := nats.Connect(allURLs, nats.Name(name), nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		return nc
	}
	nc := connect("chaos client")
	js, _ := jetstream.New(nc)
	check.Until(t, 60*time.Second, "the JetStream cluster to have a leader", func() bool {
		_, err := js.AccountInfo(ctx)
		return err == nil
	})

	// The callback service.
	cbConn := connect("chaos callbacks")
	var cbMu sync.Mutex
	var cbSrv *callbacks.Server
	startCallbacks := func() error {
		srv, err := callbacks.Start(ctx, cbConn, callbacks.Service{Name: "chaos", Callbacks: []callbacks.Def{{
			Name: "chaos_add", Description: "x + 1",
			Handler: func(_ context.Context, args json.RawMessage) (any, error) {
				var a struct{ X int }
				if err := json.Unmarshal(args, &a); err != nil {
					return nil, err
				}
				return a.X + 1, nil
			},
		}}})
		if err != nil {
			return err
		}
		cbMu.Lock()
		cbSrv = srv
		cbMu.Unlock()
		return nil
	}
	stopCallbacks := func() {
		cbMu.Lock()
		srv := cbSrv
		cbSrv = nil
		cbMu.Unlock()
		if srv != nil {
			_ = srv.Stop()
		}
	}
	if err := startCallbacks(); err != nil {
		t.Fatal(err)
	}
	defer stopCallbacks()

	// The workers.
	workers := make([]*chaosWorker, 3)
	for i := range workers {
		workers[i] = &chaosWorker{id: fmt.Sprintf("w%d", i+1), logs: &syncBuffer{}, env: []string{
			"ERYX_NATS_URL=" + allURLs, "ERYX_REPLICAS=3",
			"ERYX_POOL_SIZE=2", "ERYX_POOL_MIN_IDLE=1",
			"ERYX_ACK_WAIT=5s", "ERYX_DRAIN_TIMEOUT=2s", "ERYX_EXEC_TIMEOUT=20s",
			"ERYX_DATA_DIR=" + t.TempDir(),
			"ERYX_SNAPSHOT_KEY=chaos-test-snapshot-key-of-at-least-32-bytes",
			"ERYX_LOG_LEVEL=info",
		}}
	}
	// The first creates the streams; the others join.
	if err := workers[0].start(); err != nil {
		t.Fatalf("%v\n%s", err, workers[0].logs)
	}
	for _, w := range workers[1:] {
		if err := w.start(); err != nil {
			t.Fatalf("%v\n%s", err, w.logs)
		}
	}
	t.Cleanup(func() {
		for _, w := range workers {
			w.kill()
		}
		if t.Failed() {
			for _, w := range workers {
				t.Logf("worker %s logs (last 20000 bytes):\n%s", w.id, tailString(w.logs.String(), 20000))
			}
		}
	})

	client, err := jobs.NewClient(nc, jobs.Subjects{}, jobs.WithSubmitRetry(2*time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	subjects := client.Subjects()

	var (
		mu          sync.Mutex
		accepted    = map[string]submitted{}
		submitFails []string
		faults      faultCounts
		termErrs    []string
		faultLog    []string
	)
	note := func(format string, args ...any) {
		mu.Lock()
		faultLog = append(faultLog, time.Now().Format("15:04:05.000")+" "+fmt.Sprintf(format, args...))
		mu.Unlock()
	}
	// Session jobs only where asked for (`make chaos`): a worker killed
	// between a session's commit and the job's result runs the job again
	// on the committed state, so a counter can come out one too high. That
	// hole is open (issue #13), and the run in `make test` must not fail
	// at random on it; the full run reports it.
	var sessions []string
	if os.Getenv("ERYX_CHAOS_SESSIONS") != "" {
		sessions = []string{"s1", "s2", "s3", "s4"}
	}

	// Faults, until the load is submitted.
	loadDone := make(chan struct{})
	var faultWG sync.WaitGroup
	faultWG.Add(1)
	go func() {
		defer faultWG.Done()
		tick := time.NewTicker(2 * time.Second)
		defer tick.Stop()
		var restarts sync.WaitGroup
		defer restarts.Wait()
		down := make([]atomic.Bool, len(workers))
		natsDown := atomic.Bool{}
		for i := 1; ; i++ {
			select {
			case <-loadDone:
				return
			case <-tick.C:
			}
			switch {
			case i%10 == 5:
				// Rolling restart: each worker drained by SIGTERM in turn.
				note("rolling restart")
				for k, w := range workers {
					if !down[k].CompareAndSwap(false, true) {
						continue
					}
					faults.terms.Add(1)
					if err := w.term(); err != nil {
						mu.Lock()
						termErrs = append(termErrs, err.Error())
						mu.Unlock()
					}
					if err := w.start(); err != nil {
						note("restart of %s failed: %v", w.id, err)
					}
					down[k].Store(false)
				}
			case i%2 == 0:
				k := rand.N(len(workers))
				if !down[k].CompareAndSwap(false, true) {
					continue
				}
				w := workers[k]
				note("SIGKILL %s", w.id)
				faults.kills.Add(1)
				w.kill()
				restarts.Add(1)
				go func() {
					defer restarts.Done()
					if err := w.start(); err != nil {
						note("restart of %s failed: %v", w.id, err)
					}
					down[k].Store(false)
				}()
			case i%7 == 3:
				note("callback service down")
				faults.callbackBounces.Add(1)
				stopCallbacks()
				restarts.Add(1)
				go func() {
					defer restarts.Done()
					time.Sleep(1500 * time.Millisecond) // the outage
					if err := startCallbacks(); err != nil {
						note("callback restart failed: %v", err)
					}
					note("callback service up")
				}()
			case i%9 == 1 && !natsDown.Load():
				n := nodes[rand.N(len(nodes))]
				note("NATS node %s down", n.name)
				faults.natsBounces.Add(1)
				natsDown.Store(true)
				n.stop()
				restarts.Add(1)
				go func() {
					defer restarts.Done()
					time.Sleep(4 * time.Second) // the outage
					if err := n.start(); err != nil {
						note("NATS node %s restart failed: %v", n.name, err)
					}
					note("NATS node %s up", n.name)
					natsDown.Store(false)
				}()
			}
		}
	}()

	// The load, with bad input mixed in.
	interval := time.Second / time.Duration(rate)
	var load sync.WaitGroup
	sem := make(chan struct{}, 16)
	start := time.Now()
	for i := range nJobs {
		time.Sleep(time.Until(start.Add(time.Duration(i) * interval)))
		sem <- struct{}{}
		load.Add(1)
		go func() {
			defer load.Done()
			defer func() { <-sem }()
			job, meta := chaosJob(i, sessions)
			if _, err := client.Submit(ctx, "", job); err != nil {
				mu.Lock()
				submitFails = append(submitFails, fmt.Sprintf("%s: %v", job.ID, err))
				mu.Unlock()
				return
			}
			mu.Lock()
			accepted[job.ID] = meta
			mu.Unlock()
			switch i % 25 {
			case 7:
				// The same job again: a duplicate, never a second result.
				again, _ := chaosJob(i, sessions)
				if _, err := client.Submit(ctx, "", again); err == nil {
					faults.duplicates.Add(1)
				}
			case 13:
				_ = client.Cancel(ctx, fmt.Sprintf("ghost-%d", i), "chaos")
				faults.ghostCancels.Add(1)
			case 19:
				for _, body := range []string{"not json", `{"id":"half","code":`, `{"v":2,"id":"bad id!","code":"1"}`} {
					if _, err := js.Publish(ctx, subjects.Jobs("", jobs.DefaultTenant), []byte(body)); err == nil {
						faults.malformed.Add(1)
					}
				}
			}
		}()
	}
	load.Wait()
	close(loadDone)
	faultWG.Wait()
	note("load submitted, faults stopped")

	// Every accepted job gets its result (bounded: a stuck job fails).
	results := map[string][]*jobs.Result{}
	readResults := func() error {
		cons, err := js.OrderedConsumer(ctx, subjects.ResultsStream(), jetstream.OrderedConsumerConfig{
			FilterSubjects: []string{subjects.Event(jobs.DefaultTenant, "*", jobs.EventResult)}})
		if err != nil {
			return err
		}
		info, err := cons.Info(ctx)
		if err != nil {
			return err
		}
		out := map[string][]*jobs.Result{}
		pending := info.NumPending
		for pending > 0 {
			batch, err := cons.Fetch(int(min(pending, 500)), jetstream.FetchMaxWait(5*time.Second))
			if err != nil {
				return err
			}
			got := 0
			for m := range batch.Messages() {
				got++
				var r jobs.Result
				if json.Unmarshal(m.Data(), &r) == nil {
					out[r.ID] = append(out[r.ID], &r)
				}
				if md, err := m.Metadata(); err == nil {
					pending = md.NumPending
				}
			}
			if got == 0 {
				return errors.New("results stream read stalled")
			}
		}
		results = out
		return nil
	}
	deadline := time.Now().Add(4 * time.Minute)
	for {
		err := readResults()
		missing := 0
		mu.Lock()
		for id := range accepted {
			if len(results[id]) == 0 {
				missing++
			}
		}
		mu.Unlock()
		if err == nil && missing == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("%d accepted jobs without a result after 4 minutes (read error %v)", missing, err)
			break
		}
		time.Sleep(time.Second)
	}

	// Sessions: each counter equals its ok increments.
	okIncrements := map[string]int{}
	for id, m := range accepted {
		if m.kind == "session" && len(results[id]) > 0 && results[id][0].Status == jobs.StatusOK {
			okIncrements[m.session]++
		}
	}
	var sessionErrs []string
	for _, s := range sessions {
		rctx, rcancel := context.WithTimeout(ctx, 2*time.Minute)
		res, err := client.Run(rctx, "", &jobs.Job{Session: s, Code: "print(globals().get('n', 0))"}, jobs.Handlers{})
		rcancel()
		switch {
		case err != nil:
			sessionErrs = append(sessionErrs, fmt.Sprintf("%s: reading the counter: %v", s, err))
		case res.Status != jobs.StatusOK:
			sessionErrs = append(sessionErrs, fmt.Sprintf("%s: reading the counter: %s %s %+v", s, res.Status, res.Code, res.Error))
		case strings.TrimSpace(res.Stdout) != strconv.Itoa(okIncrements[s]):
			sessionErrs = append(sessionErrs, fmt.Sprintf("%s: counter %s, ok increments %d", s, strings.TrimSpace(res.Stdout), okIncrements[s]))
		}
	}

	// Every worker drains cleanly on a last SIGTERM.
	for _, w := range workers {
		faults.terms.Add(1)
		if err := w.term(); err != nil {
			termErrs = append(termErrs, err.Error())
		}
	}

	// The tally, from the streams.
	var lost, dups int
	var lostIDs, dupIDs []string
	var lat []time.Duration
	statuses := map[jobs.Status]int{}
	for id, m := range accepted {
		rs := results[id]
		switch {
		case len(rs) == 0:
			lost++
			lostIDs = append(lostIDs, id)
			continue
		case len(rs) > 1:
			dups++
			dupIDs = append(dupIDs, id)
		}
		statuses[rs[0].Status]++
		lat = append(lat, rs[0].FinishedAt.Sub(m.at))
	}
	dlq := streamMsgs(t, js, subjects.DeadLetterStream())
	queued := streamMsgs(t, js, subjects.JobsStream())
	slices.Sort(lat)
	pct := func(p int) time.Duration {
		if len(lat) == 0 {
			return 0
		}
		return lat[min(len(lat)-1, (p*len(lat)+99)/100-1)].Round(time.Millisecond)
	}
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 1, 0, 2, ' ', 0)
	row := func(k string, v any) { fmt.Fprintf(tw, "%s\t%v\n", k, v) }
	row("jobs submitted (accepted)", len(accepted))
	row("submissions not accepted", len(submitFails))
	row("results", len(accepted)-lost)
	row("duplicates (jobs with >1 result)", dups)
	row("lost (no result)", lost)
	row("still queued in ERYX_JOBS", queued)
	row("dead letters", dlq)
	row("outcomes", fmt.Sprint(statuses))
	row("session counters", fmt.Sprintf("%v ok increments, mismatches %d", okIncrements, len(sessionErrs)))
	row("latency submit→result p50 / p99", fmt.Sprintf("%v / %v", pct(50), pct(99)))
	row("faults: worker SIGKILLs", faults.kills.Load())
	row("faults: worker SIGTERMs (unclean exits)", fmt.Sprintf("%d (%d)", faults.terms.Load(), len(termErrs)))
	row("faults: NATS node restarts", faults.natsBounces.Load())
	row("faults: callback service restarts", faults.callbackBounces.Load())
	row("bad input: malformed / ghost cancels / duplicates", fmt.Sprintf("%d / %d / %d",
		faults.malformed.Load(), faults.ghostCancels.Load(), faults.duplicates.Load()))
	var drained, secondDeliveries int
	for _, w := range workers {
		logs := w.logs.String()
		drained += strings.Count(logs, "job interrupted by drain")
		secondDeliveries += strings.Count(logs, "second delivery of a job running here")
	}
	row("hand-backs: drained jobs / second deliveries left alone", fmt.Sprintf("%d / %d", drained, secondDeliveries))
	row("duration", time.Since(start).Round(time.Second))
	_ = tw.Flush()
	fmt.Print("\nchaos run\n" + b.String())
	t.Log("\n" + b.String())
	t.Logf("faults:\n%s", strings.Join(faultLog, "\n"))

	switch {
	case lost > 0:
		t.Errorf("lost jobs: %v", head(lostIDs, 20))
	case dups > 0:
		t.Errorf("jobs with several results: %v", head(dupIDs, 20))
	}
	if dlq > 0 {
		t.Errorf("%d dead letters: restarts must not dead-letter jobs", dlq)
	}
	if queued > 0 {
		t.Errorf("%d messages left in the jobs stream", queued)
	}
	if len(sessionErrs) > 0 {
		t.Errorf("sessions: %v", sessionErrs)
	}
	if len(termErrs) > 0 {
		t.Errorf("unclean exits: %v", termErrs)
	}
	if len(submitFails) > 0 {
		// Not a loss (never accepted), but a submitter should not give up
		// within two minutes of retries.
		t.Errorf("%d submissions gave up: %v", len(submitFails), head(submitFails, 5))
	}
}

// chaosJob is the i-th job of the load and what the tally needs of it.
func chaosJob(i int, sessions []string) (*jobs.Job, submitted) {
	id := fmt.Sprintf("chaos-%d", i)
	now := time.Now()
	switch r := i % 20; {
	case r < 11:
		return &jobs.Job{ID: id, Code: fmt.Sprintf("print(%d)", i)}, submitted{kind: "print", at: now}
	case r < 15:
		code := fmt.Sprintf(`import time
time.sleep(%.2f)
try:
    r = await chaos_add(x=%d)
except Exception as e:
    r = 'callback failed: %%s' %% type(e).__name__
print(r)`, 0.1+float64(i%5)/10, i)
		return &jobs.Job{ID: id, Code: code}, submitted{kind: "callback", at: now}
	case r == 15:
		// Longer than the drain timeout: drains hand it back.
		return &jobs.Job{ID: id, Code: "import time\ntime.sleep(3)\nprint('slow')"}, submitted{kind: "slow", at: now}
	case len(sessions) == 0:
		return &jobs.Job{ID: id, Code: fmt.Sprintf("print(%d)", i)}, submitted{kind: "print", at: now}
	default:
		s := sessions[i%len(sessions)]
		return &jobs.Job{ID: id, Session: s, Code: "n = globals().get('n', 0) + 1\nprint(n)"}, submitted{kind: "session", session: s, at: now}
	}
}

func streamMsgs(t *testing.T, js jetstream.JetStream, name string) uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, name)
	if err != nil {
		t.Errorf("stream %s: %v", name, err)
		return 0
	}
	return s.CachedInfo().State.Msgs
}

func head(s []string, n int) []string { return s[:min(n, len(s))] }

func tailString(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "..." + s[len(s)-n:]
}
