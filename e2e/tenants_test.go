package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"

	"github.com/eryx-dev/eryx/auth"
	"github.com/eryx-dev/eryx/callbacks"
	"github.com/eryx-dev/eryx/internal/testenv"
	"github.com/eryx-dev/eryx/jobs"
)

// platform is a NATS server with eryx-auth's callout, the auth handler,
// and API keys for every role: the deployment docs/operations.md
// describes, started in one test.
type platform struct {
	host  string // host:port
	store *auth.Store
	keys  map[string]string // name -> API key
}

func startCalloutNATS(t *testing.T) *platform {
	t.Helper()
	ctx := context.Background()
	issuer, err := nkeys.CreateAccount()
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := issuer.PublicKey()
	pw := fmt.Sprintf("pw-%d", time.Now().UnixNano())
	accounts, err := auth.ServerConfig{Prefix: jobs.DefaultPrefix, Issuer: pub, AuthPassword: pw}.Render()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	conf := fmt.Sprintf("listen: 127.0.0.1:-1\njetstream { store_dir: %q }\n%s", filepath.Join(dir, "js"), accounts)
	path := filepath.Join(dir, "nats.conf")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	opts, err := server.ProcessConfigFile(path)
	if err != nil {
		t.Fatal(err)
	}
	opts.NoLog, opts.NoSigs = true, true
	ns, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	t.Cleanup(ns.Shutdown)

	// eryx-auth: the callout handler on its own static user.
	authNC, err := nats.Connect(ns.ClientURL(), append([]nats.Option{nats.UserInfo(auth.AuthUser, pw)},
		auth.ConnectOptions(jobs.DefaultPrefix, "auth", "")...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(authNC.Close)
	js, err := jetstream.New(authNC)
	if err != nil {
		t.Fatal(err)
	}
	p := &platform{host: strings.TrimPrefix(ns.ClientURL(), "nats://"), keys: map[string]string{}}
	if p.store, err = auth.OpenStore(ctx, js, jobs.DefaultPrefix, true); err != nil {
		t.Fatal(err)
	}
	l, err := (&auth.Callout{Store: p.store, Issuer: issuer, Account: auth.DefaultAccount, Prefix: jobs.DefaultPrefix}).Listen(ctx, authNC)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(l.Stop)
	return p
}

func (p *platform) issue(t *testing.T, name string, spec auth.KeySpec) {
	t.Helper()
	key, _, err := p.store.IssueKey(context.Background(), spec)
	if err != nil {
		t.Fatal(err)
	}
	p.keys[name] = key
}

// url is the server's URL with name's key as the token, as the CLIs take it.
func (p *platform) url(name string) string { return "nats://" + p.keys[name] + "@" + p.host }

// violations collects a connection's permission errors.
type violations struct {
	mu   sync.Mutex
	errs []string
}

func (v *violations) handler(_ *nats.Conn, _ *nats.Subscription, err error) {
	if errors.Is(err, nats.ErrPermissionViolation) {
		v.mu.Lock()
		v.errs = append(v.errs, err.Error())
		v.mu.Unlock()
	}
}

func (v *violations) about(subject string) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	for _, e := range v.errs {
		if strings.Contains(e, `"`+subject+`"`) {
			return true
		}
	}
	return false
}

func (p *platform) connect(t *testing.T, name string, role auth.Role, scope string) (*nats.Conn, *violations) {
	t.Helper()
	v := &violations{}
	nc, err := nats.Connect(p.url(name), append([]nats.Option{nats.Name(name), nats.ErrorHandler(v.handler)},
		auth.ConnectOptions(jobs.DefaultPrefix, role, scope)...)...)
	if err != nil {
		t.Fatalf("connecting as %s: %v", name, err)
	}
	t.Cleanup(nc.Close)
	return nc, v
}

func tenantClient(t *testing.T, nc *nats.Conn, tenant string) *jobs.Client {
	t.Helper()
	c, err := jobs.NewClient(nc, jobs.Subjects{}, jobs.WithTenant(tenant))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func runAs(t *testing.T, c *jobs.Client, job *jobs.Job, h jobs.Handlers) *jobs.Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	res, err := c.Run(ctx, "", job, h)
	if err != nil {
		t.Fatalf("tenant %s, job %s: %v", c.Tenant(), job.ID, err)
	}
	return res
}

// TestPlatformUnderShippedPermissions runs the whole platform under the
// permission sets eryx-auth issues: the real eryx-worker binary with a
// worker key, a callback service with a callback key, and two tenants'
// submitters (jobs.Client and the eryx-submit binary) with their keys.
// Each tenant works; neither can read, cancel, continue or forge the
// other's jobs; a worker key cannot submit.
func TestPlatformUnderShippedPermissions(t *testing.T) {
	p := startCalloutNATS(t)
	ctx := context.Background()
	for _, tn := range []auth.Tenant{{Name: "a"}, {Name: "b", Quotas: auth.Quotas{MemoryPerJob: 64 << 20}}} {
		if _, err := p.store.AddTenant(ctx, tn); err != nil {
			t.Fatal(err)
		}
	}
	p.issue(t, "a", auth.KeySpec{Role: auth.RoleSubmitter, Tenant: "a"})
	p.issue(t, "b", auth.KeySpec{Role: auth.RoleSubmitter, Tenant: "b"})
	p.issue(t, "worker", auth.KeySpec{Role: auth.RoleWorker, Queue: jobs.DefaultQueue})
	p.issue(t, "callback", auth.KeySpec{Role: auth.RoleCallback, Callbacks: []string{"whoami"}})

	// A callback service, which sees who calls it from the worker's headers.
	cbNC, _ := p.connect(t, "callback", auth.RoleCallback, "")
	srv, err := callbacks.Start(ctx, cbNC, callbacks.Service{
		Name: "tenant-svc",
		Callbacks: []callbacks.Def{{
			Name:        "whoami",
			Description: "the calling tenant",
			Schema:      json.RawMessage(`{"type":"object","properties":{}}`),
			Handler: func(ctx context.Context, _ json.RawMessage) (any, error) {
				return callbacks.RequestTenant(ctx), nil
			},
		}},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Stop() })

	w := startWorker(t, p.url("worker"), "w1", "ERYX_CALLBACKS=true", "ERYX_POOL_SIZE=2", "ERYX_DATA_DIR="+t.TempDir())

	ncA, vA := p.connect(t, "a", auth.RoleSubmitter, "a")
	ncB, _ := p.connect(t, "b", auth.RoleSubmitter, "b")
	a, b := tenantClient(t, ncA, "a"), tenantClient(t, ncB, "b")

	// Tenant A: a callback, a session, its result read back.
	var res *jobs.Result
	testenv.PollUntil(t, 60*time.Second, "the worker to discover the callback", func() bool {
		res = runAs(t, a, &jobs.Job{Code: "print(await whoami())", Session: "s1", Callbacks: []string{"whoami"}}, jobs.Handlers{})
		return res.Status == jobs.StatusOK
	})
	if res.Stdout != "a\n" {
		t.Fatalf("tenant a's callback saw tenant %q", res.Stdout)
	}
	if res := runAs(t, a, &jobs.Job{ID: "a-secret", Code: "secret = 'a-only'\nprint('set')", Session: "s1"}, jobs.Handlers{}); res.Status != jobs.StatusOK {
		t.Fatalf("a, session: %s %s %+v", res.Status, res.Reason, res.Error)
	}
	if got, err := a.Lookup(ctx, "a-secret"); err != nil || got.Stdout != "set\n" || got.Tenant != "a" {
		t.Fatalf("a reading its own result: %+v %v", got, err)
	}

	// The same session id in B is B's own session.
	res = runAs(t, b, &jobs.Job{ID: "b-1", Code: "print(globals().get('secret', 'none'))", Session: "s1"}, jobs.Handlers{})
	if res.Status != jobs.StatusOK || res.Stdout != "none\n" {
		t.Fatalf("b in session s1 saw a's state: %s %q", res.Status, res.Stdout)
	}
	if res := runAs(t, a, &jobs.Job{Code: "print(secret)", Session: "s1"}, jobs.Handlers{}); res.Stdout != "a-only\n" {
		t.Fatalf("a's session after b used the same id: %s %q %+v", res.Status, res.Stdout, res.Error)
	}

	// A cannot read B's results or events, by any client call.
	aAsB := tenantClient(t, ncA, "b")
	lctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	if _, err := aAsB.Lookup(lctx, "b-1"); err == nil {
		t.Fatal("a read b's result")
	}
	cancel()
	if _, err := ncA.SubscribeSync("eryx.t.b.job.>"); err == nil {
		_ = ncA.Flush()
	}
	testenv.PollUntil(t, 20*time.Second, "a's subscription to b's events refused", func() bool { return vA.about("eryx.t.b.job.>") })
	wctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	if w, err := aAsB.Watch(wctx, "b-1"); err == nil {
		if _, err := w.Wait(wctx, jobs.Handlers{}); err == nil {
			t.Fatal("a watched b's job to its result")
		}
	}
	cancel()

	// A cannot cancel B's running job; B can.
	out := make(chan string, 64)
	long := make(chan *jobs.Result, 1)
	go func() {
		r, err := b.Run(ctx, "", &jobs.Job{ID: "b-long", Code: "import time\nwhile True:\n    print('tick', flush=True)\n    time.sleep(0.05)"},
			jobs.Handlers{Output: func(_ jobs.EventKind, d []byte) {
				select {
				case out <- string(d):
				default:
				}
			}})
		if err != nil {
			t.Error(err)
		}
		long <- r
	}()
	<-out
	cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	if err := aAsB.Cancel(cctx, "b-long", "attack"); err == nil {
		t.Fatal("a's cancel of b's job was accepted")
	}
	cancel()
	// Output after the attempt: still running.
	for len(out) > 0 {
		<-out
	}
	<-out
	if err := b.Cancel(ctx, "b-long", "done"); err != nil {
		t.Fatal(err)
	}
	if r := <-long; r == nil || r.Status != jobs.StatusCancelled {
		t.Fatalf("b's own cancel: %+v", r)
	}

	// A cannot forge a result for a B job id, nor one of its own.
	for _, subject := range []string{"eryx.t.b.job.b-forged.result", "eryx.t.a.job.a-forged.result"} {
		_ = ncA.Publish(subject, []byte(`{"v":2,"id":"x","status":"ok","stdout":"forged"}`))
		testenv.PollUntil(t, 20*time.Second, "a's forged result refused on "+subject, func() bool {
			_ = ncA.Flush()
			return vA.about(subject)
		})
	}
	if res := runAs(t, b, &jobs.Job{ID: "b-forged", Code: "print('real')"}, jobs.Handlers{}); res.Status != jobs.StatusOK || res.Stdout != "real\n" {
		t.Fatalf("b's job after a's forgery: %s %q", res.Status, res.Stdout)
	}

	// B's quota (read by the worker from eryx-auth's bucket) applies.
	res = runAs(t, b, &jobs.Job{Code: "pass", MemoryMB: 100}, jobs.Handlers{})
	if res.Status != jobs.StatusRejected || res.Code != jobs.CodeQuotaExceeded || res.Limit != "memory_per_job" {
		t.Fatalf("b over its memory quota: %s %s %s", res.Status, res.Code, res.Limit)
	}

	// A worker's key cannot submit for a tenant.
	ncW, vW := p.connect(t, "worker", auth.RoleWorker, jobs.DefaultQueue)
	sctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	if _, err := tenantClient(t, ncW, "a").Submit(sctx, "", &jobs.Job{Code: "print('from a worker key')"}); err == nil {
		t.Fatal("a worker key submitted a job")
	}
	cancel()
	testenv.PollUntil(t, 20*time.Second, "the worker key's submission refused", func() bool { return vW.about("eryx.jobs.default.a") })

	// Files, under the submitter keys: the worker makes a's bucket at a's
	// first job with files; then eryx-submit uploads, mounts and downloads
	// as tenant a, and b cannot see a's files.
	res = runAs(t, a, &jobs.Job{ID: "a-out", Code: "open('/output/first.txt', 'w').write('first')"}, jobs.Handlers{})
	if res.Status != jobs.StatusOK || len(res.Files) != 1 || res.Files[0].Bucket != "ERYX_FILES_a" || res.FilesError != "" {
		t.Fatalf("a's first output: %s %+v %q", res.Status, res.Files, res.FilesError)
	}
	dir := t.TempDir()
	csv := filepath.Join(dir, "in.csv")
	if err := os.WriteFile(csv, []byte("n\n1\n2\n3\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	outDir := filepath.Join(dir, "out")
	code, stdout, stderr := submit(t, p.url("a"), "--tenant", "a", "--file", csv, "--out", outDir, "-c",
		"rows = open('/data/in.csv').read().split()[1:]\nopen('/output/sum.txt', 'w').write(str(sum(map(int, rows))))\nprint(len(rows))")
	if code != 0 || stdout != "3\n" {
		t.Fatalf("eryx-submit --file --out as tenant a: exit %d stdout %q stderr %q", code, stdout, stderr)
	}
	if got, err := os.ReadFile(filepath.Join(outDir, "sum.txt")); err != nil || string(got) != "6" {
		t.Fatalf("a's downloaded output: %q %v", got, err)
	}
	if code, stdout, stderr := submit(t, p.url("a"), "--tenant", "a", "files", "ls"); code != 0 || !strings.Contains(stdout, "a-out/first.txt") || !strings.Contains(stdout, "sha256-") {
		t.Fatalf("eryx-submit files ls as a: exit %d %q %q", code, stdout, stderr)
	}
	var got bytes.Buffer
	if _, err := b.GetFile(ctx, "a-out/first.txt", &got); err == nil {
		t.Fatal("b read a's output")
	}

	if os.Getenv("ERYX_TEST_LOG") != "" {
		t.Logf("worker logs:\n%s", w.logs.String())
	}
	// Everything the worker did was within its permissions.
	if logs := w.logs.String(); strings.Contains(strings.ToLower(logs), "permissions violation") {
		t.Errorf("the worker was refused something:\n%s", logs)
	}

	// The CLI, as tenant A with its key.
	code, stdout, stderr = submit(t, p.url("a"), "--tenant", "a", "-c", "print(6*7)")
	if code != 0 || stdout != "42\n" {
		t.Fatalf("eryx-submit as tenant a: exit %d stdout %q stderr %q", code, stdout, stderr)
	}
}
