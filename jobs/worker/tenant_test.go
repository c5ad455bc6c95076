package worker_test

import (
	"archive/zip"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/eryx-dev/eryx/callbacks"
	"github.com/eryx-dev/eryx/callbacks/catalogue"
	"github.com/eryx-dev/eryx/internal/testenv"
	"github.com/eryx-dev/eryx/jobs"
	"github.com/eryx-dev/eryx/kvstate"
)

// tenantClient is a client acting for tenant.
func tenantClient(t *testing.T, nc *nats.Conn, tenant string) *jobs.Client {
	t.Helper()
	c, err := jobs.NewClient(nc, jobs.Subjects{}, jobs.WithTenant(tenant))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// The same session id in two tenants is two sessions: neither sees the
// other's variables, and each continues its own.
func TestSessionsArePerTenant(t *testing.T) {
	url := startServer(t)
	nc := connect(t, url)
	startWorker(t, nc, sessionConfig(t, nc, "w1"))
	alice := tenantClient(t, connect(t, url), "alice")
	mallory := tenantClient(t, connect(t, url), "mallory")

	if res := runJob(t, alice, &jobs.Job{Session: "shared", Code: "api_key = 'alice-secret'"}, jobs.Handlers{}); res.Status != jobs.StatusOK || res.Tenant != "alice" {
		t.Fatalf("alice: %s %s %+v", res.Status, res.Tenant, res.Error)
	}
	// Mallory names the same session: she gets her own, empty one.
	res := runJob(t, mallory, &jobs.Job{Session: "shared", Code: "print(globals().get('api_key'))\ntrojan = True"}, jobs.Handlers{})
	if res.Status != jobs.StatusOK || res.Stdout != "None\n" || res.Tenant != "mallory" {
		t.Fatalf("mallory read alice's session: %s %q %+v", res.Status, res.Stdout, res.Error)
	}
	res = runJob(t, alice, &jobs.Job{Session: "shared", Code: "print(api_key, 'trojan' in globals())"}, jobs.Handlers{})
	if res.Status != jobs.StatusOK || res.Stdout != "alice-secret False\n" {
		t.Fatalf("alice's next job: %s %q %+v", res.Status, res.Stdout, res.Error)
	}
	// In the store they are two keys.
	js, _ := jetstream.New(nc)
	kv, err := js.KeyValue(context.Background(), kvstate.DefaultBucket)
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"alice.shared", "mallory.shared"} {
		if _, err := kv.Get(context.Background(), key); err != nil {
			t.Errorf("key %s: %v", key, err)
		}
	}
}

// A snapshot edited in KV by anyone but a worker is refused with
// session_tampered and never restored: not by the worker that has the
// session warm, not by another one. Copying another session's tagged
// snapshot over it fails the same way.
func TestTamperedSnapshotRefused(t *testing.T) {
	url := startServer(t)
	nc := connect(t, url)
	startWorker(t, nc, sessionConfig(t, nc, "w1"))
	c := newClient(t, connect(t, url))
	js, _ := jetstream.New(connect(t, url))
	ctx := context.Background()
	stream, err := js.Stream(ctx, "KV_"+kvstate.DefaultBucket)
	if err != nil {
		t.Fatal(err)
	}
	subject := func(key string) string { return "$KV." + kvstate.DefaultBucket + "." + key }
	replace := func(key string, header nats.Header, data []byte) {
		t.Helper()
		msg := &nats.Msg{Subject: subject(key), Header: header, Data: data}
		if _, err := js.PublishMsg(ctx, msg); err != nil {
			t.Fatal(err)
		}
	}
	attacks := []struct {
		name   string
		attack func(key string)
	}{
		{"value edited, tag kept", func(key string) {
			m, err := stream.GetLastMsgForSubject(ctx, subject(key))
			if err != nil {
				t.Fatal(err)
			}
			evil := bytes.Clone(m.Data)
			evil[len(evil)/2] ^= 0x20
			replace(key, nats.Header{kvstate.HeaderMeta: m.Header[kvstate.HeaderMeta]}, evil)
		}},
		{"tag removed", func(key string) {
			m, err := stream.GetLastMsgForSubject(ctx, subject(key))
			if err != nil {
				t.Fatal(err)
			}
			var meta kvstate.Meta
			_ = json.Unmarshal([]byte(m.Header.Get(kvstate.HeaderMeta)), &meta)
			meta.MAC = ""
			hdr, _ := json.Marshal(meta)
			replace(key, nats.Header{kvstate.HeaderMeta: {string(hdr)}}, m.Data)
		}},
		{"another session's snapshot copied in", func(key string) {
			if res := runJob(t, c, &jobs.Job{Session: "donor", Code: "import builtins\nstolen = 1"}, jobs.Handlers{}); res.Status != jobs.StatusOK {
				t.Fatal(res.Status)
			}
			m, err := stream.GetLastMsgForSubject(ctx, subject(jobs.SessionKey(jobs.DefaultTenant, "donor")))
			if err != nil {
				t.Fatal(err)
			}
			replace(key, nats.Header{kvstate.HeaderMeta: m.Header[kvstate.HeaderMeta]}, m.Data)
		}},
	}
	for i, a := range attacks {
		t.Run(a.name, func(t *testing.T) {
			session := fmt.Sprintf("victim%d", i)
			if res := runJob(t, c, &jobs.Job{Session: session, Code: "secret = 'mine'"}, jobs.Handlers{}); res.Status != jobs.StatusOK {
				t.Fatalf("first job: %s %+v", res.Status, res.Error)
			}
			a.attack(jobs.SessionKey(jobs.DefaultTenant, session))
			// The session is warm on w1, at the revision before the attack:
			// the worker sees that the store moved and loads it, checked.
			res := runJob(t, c, &jobs.Job{Session: session, Code: "print(secret)"}, jobs.Handlers{})
			if res.Status != jobs.StatusRejected || res.Code != jobs.CodeSessionTampered || res.Stdout != "" {
				t.Fatalf("after the attack: %s %s %q %q", res.Status, res.Code, res.Reason, res.Stdout)
			}
			// And it stays refused (nothing was restored or kept warm).
			res = runJob(t, c, &jobs.Job{Session: session, Code: "print(secret)"}, jobs.Handlers{})
			if res.Status != jobs.StatusRejected || res.Code != jobs.CodeSessionTampered {
				t.Fatalf("second try: %s %s %q", res.Status, res.Code, res.Reason)
			}
		})
	}
	// A worker with another key refuses honest snapshots too: the key is
	// what makes a snapshot a worker's.
	ncB := connect(t, url)
	other, err := kvstate.Open(ctx, mustJS(t, ncB), kvstate.Config{MACKey: []byte("another-key-another-key-another-key")})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := other.Load(ctx, jobs.SessionKey(jobs.DefaultTenant, "donor")); err == nil {
		t.Fatal("a store with another key accepted the snapshot")
	}
}

func mustJS(t *testing.T, nc *nats.Conn) jetstream.JetStream {
	t.Helper()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// zipPackage is an importable package module named mod whose VALUE is v.
func zipPackage(t *testing.T, mod, v string) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	f, err := zw.Create(mod + "/__init__.py")
	if err != nil {
		t.Fatal(err)
	}
	_, _ = f.Write([]byte("VALUE = " + v + "\n"))
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// Packages are the tenant's, with the platform's as fallback; a pinned
// package that was overwritten is refused (package_mismatch), never
// imported.
func TestPackagesPerTenantAndPinned(t *testing.T) {
	url := startServer(t)
	nc := connect(t, url)
	startWorker(t, nc, testConfig("w1"))
	alice := tenantClient(t, connect(t, url), "alice")
	bob := tenantClient(t, connect(t, url), "bob")
	ctx := context.Background()
	obs, err := mustJS(t, nc).ObjectStore(ctx, "ERYX_PACKAGES")
	if err != nil {
		t.Fatal(err)
	}
	put := func(name string, data []byte) string {
		t.Helper()
		if _, err := obs.PutBytes(ctx, name, data); err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(data)
		return hex.EncodeToString(sum[:])
	}
	put("_platform/lib", zipPackage(t, "lib", "'platform'"))
	good := put("alice/lib", zipPackage(t, "lib", "'alice v1'"))
	put("alice/private", zipPackage(t, "private", "'alice only'"))

	run := func(c *jobs.Client, pkgs ...string) *jobs.Result {
		t.Helper()
		mod := strings.SplitN(pkgs[0], "@", 2)[0]
		return runJob(t, c, &jobs.Job{Code: "import " + mod + "\nprint(" + mod + ".VALUE)", Packages: pkgs}, jobs.Handlers{})
	}
	tests := []struct {
		name   string
		c      *jobs.Client
		pkg    string
		stdout string
		code   jobs.RejectCode
	}{
		{"the tenant's own shadows the platform's", alice, "lib", "alice v1\n", ""},
		{"another tenant gets the platform's", bob, "lib", "platform\n", ""},
		{"another tenant's private package is unknown", bob, "private", "", jobs.CodeUnknownPackage},
		{"pinned to the right content", alice, "lib@sha256:" + good, "alice v1\n", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := run(tt.c, tt.pkg)
			if tt.code != "" {
				if res.Status != jobs.StatusRejected || res.Code != tt.code {
					t.Fatalf("%s %s %q, want rejected %s", res.Status, res.Code, res.Reason, tt.code)
				}
				return
			}
			if res.Status != jobs.StatusOK || res.Stdout != tt.stdout {
				t.Fatalf("%s %q %q %+v", res.Status, res.Stdout, res.Reason, res.Error)
			}
		})
	}

	// Overwritten (the worker has the old content cached, too): the pin
	// refuses the new content, an unpinned job gets it.
	put("alice/lib", zipPackage(t, "lib", "'evil'"))
	res := run(alice, "lib@sha256:"+good)
	if res.Status != jobs.StatusRejected || res.Code != jobs.CodePackageMismatch || !strings.Contains(res.Reason, good) {
		t.Fatalf("pinned after overwrite: %s %s %q", res.Status, res.Code, res.Reason)
	}
	if res := run(alice, "lib"); res.Stdout != "evil\n" {
		t.Fatalf("unpinned after overwrite: %s %q", res.Status, res.Stdout)
	}
	// An overwrite whose object info claims the pinned digest (the info
	// is the uploader's word) is caught on the bytes.
	real := zipPackage(t, "lib2", "'real'")
	pin := put("alice/lib2", real)
	put("alice/lib2", zipPackage(t, "lib2", "'evil'"))
	raw, _ := hex.DecodeString(pin)
	testenv.ForgeObjectDigest(t, mustJS(t, nc), "ERYX_PACKAGES", "alice/lib2", "SHA-256="+base64.URLEncoding.EncodeToString(raw))
	if res := run(alice, "lib2@sha256:"+pin); res.Status != jobs.StatusRejected || res.Code != jobs.CodePackageMismatch {
		t.Fatalf("forged digest: %s %s %q %q", res.Status, res.Code, res.Reason, res.Stdout)
	}
	// A malformed pin is a malformed job.
	if res := run(alice, "lib@sha256:1234"); res.Status != jobs.StatusRejected || res.Code != jobs.CodeMalformed {
		t.Fatalf("bad pin: %s %s", res.Status, res.Code)
	}
}

// The tenant comes from the subject: a job document naming another tenant
// is rejected, and the rejection goes to the subject's tenant.
func TestJobNamingAnotherTenantRejected(t *testing.T) {
	url := startServer(t)
	nc := connect(t, url)
	startWorker(t, nc, testConfig("w1"))
	acme := tenantClient(t, connect(t, url), "acme")
	victim := tenantClient(t, connect(t, url), "victim")
	js := mustJS(t, connect(t, url))
	ctx := context.Background()

	msg := &nats.Msg{Subject: "eryx.jobs.default.acme", Data: []byte(`{"id":"claims","tenant":"victim","code":"print('x')"}`)}
	if _, err := js.PublishMsg(ctx, msg); err != nil {
		t.Fatal(err)
	}
	res := waitResult(t, acme, "claims")
	if res.Status != jobs.StatusRejected || res.Code != jobs.CodeInvalidTenant || res.Tenant != "acme" {
		t.Fatalf("%s %s %q tenant %s", res.Status, res.Code, res.Reason, res.Tenant)
	}
	if _, err := victim.Lookup(ctx, "claims"); err == nil {
		t.Fatal("a result was published for the victim tenant")
	}
	// Naming its own tenant is fine; the client refuses to send a mismatch.
	if res := runJob(t, acme, &jobs.Job{Tenant: "acme", Code: "print(1)"}, jobs.Handlers{}); res.Status != jobs.StatusOK {
		t.Fatalf("own tenant: %s", res.Status)
	}
	if _, err := acme.Submit(ctx, "", &jobs.Job{Tenant: "victim", Code: "1"}); err == nil {
		t.Fatal("the client submitted a job naming another tenant")
	}
	// A subject whose tenant token is not a tenant gets no result at all.
	bad := &nats.Msg{Subject: "eryx.jobs.default._platform", Data: []byte(`{"id":"sneaky","code":"print(1)"}`)}
	if _, err := js.PublishMsg(ctx, bad); err != nil {
		t.Fatal(err)
	}
	waitQueueEmpty(t, js)
	if n := countMessages(t, js, "eryx.t.*.job.sneaky.result"); n != 0 {
		t.Fatalf("%d results for a job on an invalid tenant", n)
	}
}

// Ids are per tenant: another tenant's result under the same id does not
// make a job a duplicate, a cancel of the same id in another tenant does
// not stop it, and each tenant's result is its own.
func TestJobIDsArePerTenant(t *testing.T) {
	url := startServer(t)
	nc := connect(t, url)
	startWorker(t, nc, testConfig("w1"))
	mallory := tenantClient(t, connect(t, url), "mallory")
	alice := tenantClient(t, connect(t, url), "alice")
	ctx := context.Background()

	// Mallory answers first under alice's future id, in her own tenant.
	if res := runJob(t, mallory, &jobs.Job{ID: "report", Code: "print('forged ok')"}, jobs.Handlers{}); res.Status != jobs.StatusOK {
		t.Fatal(res.Status)
	}
	res := runJob(t, alice, &jobs.Job{ID: "report", Code: "print('real')"}, jobs.Handlers{})
	if res.Status != jobs.StatusOK || res.Stdout != "real\n" || res.Tenant != "alice" {
		t.Fatalf("alice's job: %s %q %s", res.Status, res.Stdout, res.Tenant)
	}

	// Mallory cancels alice's running job id: only her own tenant's id is
	// cancelled. Alice's cancel works.
	out := newOutput()
	done := make(chan *jobs.Result, 1)
	go func() {
		done <- runJob(t, alice, &jobs.Job{ID: "long", Code: "import time\nprint('started', flush=True)\nfor i in range(200):\n    time.sleep(0.05)\nprint('finished')"}, out.handlers())
	}()
	waitFirstOutput(t, out)
	if err := mallory.Cancel(ctx, "long", "evil"); err != nil {
		t.Fatal(err)
	}
	// Mallory's own later job of that id was cancelled in advance; once
	// it is answered, her cancel has certainly reached the worker.
	if res := runJob(t, mallory, &jobs.Job{ID: "long", Code: "print(1)"}, jobs.Handlers{}); res.Status != jobs.StatusCancelled {
		t.Fatalf("mallory's own job: %s", res.Status)
	}
	select {
	case res := <-done:
		t.Fatalf("alice's job ended after mallory's cancel: %s", res.Status)
	default:
	}
	if err := alice.Cancel(ctx, "long", "mine"); err != nil {
		t.Fatal(err)
	}
	if res := <-done; res.Status != jobs.StatusCancelled {
		t.Fatalf("alice's own cancel: %s", res.Status)
	}
}

// Callbacks through a worker: raw host calls with bad arguments are
// refused on the host (the service never sees them), a service's tenant
// list hides it from other tenants, and the service learns the caller.
func TestCallbacksTrustedThroughTheWorker(t *testing.T) {
	url := startServer(t)
	var received atomic.Int64
	var lastCaller atomic.Value
	srv, err := callbacks.Start(context.Background(), connect(t, url), callbacks.Service{
		Name: "timer", Tenants: []string{"alice"},
		Callbacks: []callbacks.Def{{
			Name:   "sleep",
			Schema: json.RawMessage(`{"type":"object","properties":{"seconds":{"type":"number","minimum":0},"label":{"type":"string"}},"required":["seconds"]}`),
			Handler: func(ctx context.Context, _ json.RawMessage) (any, error) {
				received.Add(1)
				lastCaller.Store(callbacks.RequestTenant(ctx) + "/" + callbacks.RequestJob(ctx))
				return "slept", nil
			},
		}},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Stop() })
	nc := connect(t, url)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	cfg := testConfig("w1")
	cfg.Callbacks = catalogue.New(ctx, nc, catalogue.Options{RefreshInterval: -1, Logger: testLogger()})
	startWorker(t, nc, cfg)
	alice := tenantClient(t, connect(t, url), "alice")
	bob := tenantClient(t, connect(t, url), "bob")

	raw := func(body string) string {
		return fmt.Sprintf("import _eryx\ntry:\n    _eryx.host_call_sync('callback', %q.encode())\n    print('sent')\nexcept Exception as e:\n    print(type(e).__name__)\n", body)
	}
	for _, body := range []string{
		`{"name":"sleep","args":{"seconds":-5}}`,
		`{"name":"sleep","args":{"seconds":1,"label":{"a":1}}}`,
		`{"name":"sleep","args":[1]}`,
		`{"name":"sleep"}`,
		`{"name":"sleep","args":null}`,
		`{"name":"sleep","args":"x"}`,
	} {
		res := runJob(t, alice, &jobs.Job{Code: raw(body)}, jobs.Handlers{})
		if res.Status != jobs.StatusOK || res.Stdout != "TypeError\n" {
			t.Errorf("%s: %s %q %+v", body, res.Status, res.Stdout, res.Error)
		}
	}
	if n := received.Load(); n != 0 {
		t.Fatalf("the service received %d invalid calls", n)
	}
	res := runJob(t, alice, &jobs.Job{ID: "ok-call", Code: "result = await sleep(seconds=0.01)"}, jobs.Handlers{})
	if res.Status != jobs.StatusOK || string(res.Result) != `"slept"` {
		t.Fatalf("valid call: %s %s %+v", res.Status, res.Result, res.Error)
	}
	if got := lastCaller.Load(); got != "alice/ok-call" {
		t.Fatalf("the service saw caller %v", got)
	}
	// Bob's jobs do not see it, and cannot call it, raw or not.
	res = runJob(t, bob, &jobs.Job{Code: "print('sleep' in globals())\n" + raw(`{"name":"sleep","args":{"seconds":1}}`)}, jobs.Handlers{})
	if res.Status != jobs.StatusOK || res.Stdout != "False\nNameError\n" {
		t.Fatalf("bob: %s %q %+v", res.Status, res.Stdout, res.Error)
	}
	if n := received.Load(); n != 1 {
		t.Fatalf("the service received %d calls, want alice's 1", n)
	}
}
