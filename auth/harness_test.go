package auth_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"

	"github.com/eryx-dev/eryx/auth"
	"github.com/eryx-dev/eryx/jobs"
)

const prefix = "eryx"

// identity is who a test connects as.
type identity struct {
	role      auth.Role
	tenant    string   // submitter
	queue     string   // worker
	callbacks []string // callback
}

func (id identity) String() string {
	switch id.role {
	case auth.RoleSubmitter:
		return "submitter-" + id.tenant
	case auth.RoleWorker:
		return "worker-" + id.queue
	case auth.RoleCallback:
		return "callback-" + strings.Join(id.callbacks, "-")
	}
	return string(id.role)
}

func (id identity) inbox() string {
	switch id.role {
	case auth.RoleSubmitter:
		return auth.InboxPrefix(prefix, id.role, id.tenant)
	case auth.RoleWorker:
		return auth.InboxPrefix(prefix, id.role, id.queue)
	}
	return "_INBOX"
}

func (id identity) perms(t testing.TB) jwt.Permissions {
	t.Helper()
	p, err := auth.PermissionsFor(prefix, auth.Key{Role: id.role, Tenant: id.tenant, Queue: id.queue, Callbacks: id.callbacks})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

var (
	tenantA   = identity{role: auth.RoleSubmitter, tenant: "a"}
	tenantB   = identity{role: auth.RoleSubmitter, tenant: "b"}
	worker    = identity{role: auth.RoleWorker, queue: "default"}
	clockSvc  = identity{role: auth.RoleCallback, callbacks: []string{"clock"}}
	admin     = identity{role: auth.RoleAdmin}
	identites = []identity{tenantA, tenantB, worker, clockSvc, admin}
)

// deployment is a NATS server configured one of the two supported ways,
// with a way to connect as each identity.
type deployment struct {
	name   string
	ns     *server.Server
	url    string
	creds  map[string]nats.Option // identity -> auth option
	store  *auth.Store            // callout only
	authJS jetstream.JetStream    // callout only: eryx-auth's connection
	stopCb func()                 // callout only: stops eryx-auth
	mu     sync.Mutex
	seen   []auth.Decision
}

func randHex(t testing.TB) string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b[:])
}

func startServer(t testing.TB, accounts string) *server.Server {
	t.Helper()
	dir := t.TempDir()
	conf := fmt.Sprintf("listen: 127.0.0.1:-1\njetstream { store_dir: %q }\n%s", filepath.Join(dir, "js"), accounts)
	path := filepath.Join(dir, "nats.conf")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	opts, err := server.ProcessConfigFile(path)
	if err != nil {
		t.Fatalf("config:\n%s\n%v", conf, err)
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
	return ns
}

// staticDeployment has one static user per identity, with the rendered
// permission blocks: the small-install alternative.
func staticDeployment(t testing.TB) *deployment {
	t.Helper()
	d := &deployment{name: "static", creds: map[string]nats.Option{}}
	cfg := auth.ServerConfig{Prefix: prefix}
	for _, id := range identites {
		pw := randHex(t)
		cfg.Users = append(cfg.Users, auth.StaticUser{User: id.String(), Password: pw, Permissions: id.perms(t)})
		d.creds[id.String()] = nats.UserInfo(id.String(), pw)
	}
	text, err := cfg.Render()
	if err != nil {
		t.Fatal(err)
	}
	d.ns = startServer(t, text)
	d.url = d.ns.ClientURL()
	return d
}

// calloutDeployment runs eryx-auth's callout; every identity gets an API
// key from the store.
func calloutDeployment(t testing.TB) *deployment {
	t.Helper()
	ctx := context.Background()
	d := &deployment{name: "callout", creds: map[string]nats.Option{}}
	issuer, err := nkeys.CreateAccount()
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := issuer.PublicKey()
	authPW := randHex(t)
	text, err := auth.ServerConfig{Prefix: prefix, Issuer: pub, AuthPassword: authPW}.Render()
	if err != nil {
		t.Fatal(err)
	}
	d.ns = startServer(t, text)
	d.url = d.ns.ClientURL()

	authNC, err := nats.Connect(d.url, nats.UserInfo(auth.AuthUser, authPW),
		nats.CustomInboxPrefix(auth.InboxPrefix(prefix, "auth", "")))
	if err != nil {
		t.Fatalf("eryx-auth connecting: %v", err)
	}
	t.Cleanup(authNC.Close)
	js, err := jetstream.New(authNC)
	if err != nil {
		t.Fatal(err)
	}
	d.authJS = js
	d.store, err = auth.OpenStore(ctx, js, prefix, true)
	if err != nil {
		t.Fatal(err)
	}
	co := &auth.Callout{Store: d.store, Issuer: issuer, Account: auth.DefaultAccount, Prefix: prefix,
		Observe: func(dec auth.Decision) { d.mu.Lock(); d.seen = append(d.seen, dec); d.mu.Unlock() }}
	l, err := co.Listen(ctx, authNC)
	if err != nil {
		t.Fatal(err)
	}
	d.stopCb = l.Stop
	t.Cleanup(l.Stop)
	for _, tn := range []string{"a", "b"} {
		if _, err := d.store.AddTenant(ctx, auth.Tenant{Name: tn}); err != nil {
			t.Fatal(err)
		}
	}
	for _, id := range identites {
		key, _, err := d.store.IssueKey(ctx, auth.KeySpec{Role: id.role, Tenant: id.tenant, Queue: id.queue, Callbacks: id.callbacks})
		if err != nil {
			t.Fatal(err)
		}
		d.creds[id.String()] = nats.Token(key)
	}
	return d
}

// decisions returns what the callout decided so far.
func (d *deployment) decisions() []auth.Decision {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]auth.Decision(nil), d.seen...)
}

// conn is a client connection that collects the server's asynchronous
// errors (permission violations).
type conn struct {
	*nats.Conn
	js   jetstream.JetStream
	errs chan error
	// refused are the subject prefixes of refusals a test asked for: the
	// client reports permission errors asynchronously, so one can arrive
	// after the step that caused it and must not fail a later one.
	refused []string
}

// expected reports whether err is a refusal a test asked for earlier.
func (c *conn) expected(err error) bool {
	for _, p := range c.refused {
		if strings.Contains(err.Error(), `"`+p) {
			return true
		}
	}
	return false
}

func (d *deployment) connect(t testing.TB, id identity) *conn {
	t.Helper()
	c, err := d.dial(id.String(), d.creds[id.String()], id.inbox())
	if err != nil {
		t.Fatalf("%s: connecting as %s: %v", d.name, id, err)
	}
	t.Cleanup(c.Close)
	return c
}

func (d *deployment) dial(name string, cred nats.Option, inbox string, extra ...nats.Option) (*conn, error) {
	c := &conn{errs: make(chan error, 64)}
	opts := append([]nats.Option{cred, nats.Name(name), nats.CustomInboxPrefix(inbox),
		nats.NoReconnect(), nats.MaxReconnects(0),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			select {
			case c.errs <- err:
			default:
			}
		})}, extra...)
	nc, err := nats.Connect(d.url, opts...)
	if err != nil {
		return nil, err
	}
	c.Conn = nc
	c.js, err = jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, err
	}
	return c, nil
}

// bound is generous: it catches a hang, it does not measure speed.
const bound = 20 * time.Second

// violation waits for the server's permission-violation error about
// subject, after the caller did something the permissions forbid. The
// flush orders it: the server answers the offending operation before the
// PING.
func (c *conn) violation(t testing.TB, what, subject string) {
	t.Helper()
	_ = c.Flush()
	timer := time.NewTimer(bound)
	defer timer.Stop()
	for {
		select {
		case err := <-c.errs:
			if errors.Is(err, nats.ErrPermissionViolation) && strings.Contains(err.Error(), `"`+subject+`"`) {
				return
			}
		case <-timer.C:
			t.Fatalf("%s: no permissions violation for %q", what, subject)
		}
	}
}

// noViolation checks that nothing so far was refused.
func (c *conn) noViolation(t testing.TB, what string) {
	t.Helper()
	if err := c.Flush(); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	for {
		select {
		case err := <-c.errs:
			if !c.expected(err) {
				t.Fatalf("%s: %v", what, err)
			}
		default:
			return
		}
	}
}

// setupStreams creates the platform's streams (as an admin) exactly as
// workers do: jobs.Topology is the one definition of them.
func setupStreams(t testing.TB, c *conn) {
	t.Helper()
	top := jobs.Topology{Subjects: jobs.Subjects{Prefix: prefix}}
	if err := top.EnsureStreams(context.Background(), c.js); err != nil {
		t.Fatal(err)
	}
}

// deployments runs f against both ways of configuring NATS.
func deployments(t *testing.T, f func(t *testing.T, d *deployment)) {
	for _, mk := range []func(testing.TB) *deployment{staticDeployment, calloutDeployment} {
		d := mk(t)
		t.Run(d.name, func(t *testing.T) { f(t, d) })
	}
}
