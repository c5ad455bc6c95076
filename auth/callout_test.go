package auth_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/eryx-dev/eryx/auth"
	"github.com/eryx-dev/eryx/internal/testenv"
)

// refusedWith checks that connecting with key fails as unauthorized and
// that the callout gave reason.
func refusedWith(t *testing.T, d *deployment, key, reason string) {
	t.Helper()
	before := len(d.decisions())
	c, err := d.dial("refused", nats.Token(key), "_INBOX")
	if err == nil {
		c.Close()
		t.Fatalf("key %.20s... connected", key)
	}
	if !errors.Is(err, nats.ErrAuthorization) {
		t.Fatalf("want an authorization violation, got %v", err)
	}
	testenv.PollUntil(t, bound, "the callout's decision", func() bool { return len(d.decisions()) > before })
	dec := d.decisions()[before]
	if dec.Allowed || !strings.Contains(dec.Reason, reason) {
		t.Fatalf("decision %+v, want a refusal with %q", dec, reason)
	}
}

func TestCalloutRefusals(t *testing.T) {
	ctx := context.Background()
	d := calloutDeployment(t)

	t.Run("unknown and malformed keys", func(t *testing.T) {
		refusedWith(t, d, "eryx_0123456789ab_notakeywehaveissued", "unknown API key")
		refusedWith(t, d, "hunter2", "malformed API key")
		refusedWith(t, d, "eryx_"+strings.Repeat("x", 200), "malformed API key")
		refusedWith(t, d, "", "no API key")
	})

	t.Run("a key with a wrong secret is unknown", func(t *testing.T) {
		key, _, err := d.store.IssueKey(ctx, auth.KeySpec{Role: auth.RoleSubmitter, Tenant: "a"})
		if err != nil {
			t.Fatal(err)
		}
		forged := key[:len(key)-4] + "AAAA"
		if forged == key {
			forged = key[:len(key)-4] + "BBBB"
		}
		refusedWith(t, d, forged, "unknown API key")
	})

	t.Run("a revoked key stops working on its next connection", func(t *testing.T) {
		key, k, err := d.store.IssueKey(ctx, auth.KeySpec{Role: auth.RoleSubmitter, Tenant: "a"})
		if err != nil {
			t.Fatal(err)
		}
		c, err := d.dial("before", nats.Token(key), auth.InboxPrefix(prefix, auth.RoleSubmitter, "a"))
		if err != nil {
			t.Fatalf("fresh key: %v", err)
		}
		defer c.Close()
		if err := d.store.RevokeKey(ctx, k.ID); err != nil {
			t.Fatal(err)
		}
		refusedWith(t, d, key, "unknown API key")
		if err := d.store.RevokeKey(ctx, k.ID); !errors.Is(err, auth.ErrUnknownKey) {
			t.Fatalf("revoking twice: %v", err)
		}
	})

	t.Run("keys of a removed tenant are refused, also after the name is reused", func(t *testing.T) {
		if _, err := d.store.AddTenant(ctx, auth.Tenant{Name: "gone"}); err != nil {
			t.Fatal(err)
		}
		key, _, err := d.store.IssueKey(ctx, auth.KeySpec{Role: auth.RoleSubmitter, Tenant: "gone"})
		if err != nil {
			t.Fatal(err)
		}
		if err := d.store.RemoveTenant(ctx, "gone"); err != nil {
			t.Fatal(err)
		}
		refusedWith(t, d, key, "unknown API key")
		if _, err := d.store.AddTenant(ctx, auth.Tenant{Name: "gone"}); err != nil {
			t.Fatal(err)
		}
		refusedWith(t, d, key, "unknown API key")
		if _, _, err := d.store.Authenticate(ctx, key); !errors.Is(err, auth.ErrUnknownKey) {
			t.Fatalf("authenticate: %v", err)
		}
	})

	t.Run("eryx-auth down: new connections are refused, none let in", func(t *testing.T) {
		key, _, err := d.store.IssueKey(ctx, auth.KeySpec{Role: auth.RoleSubmitter, Tenant: "a"})
		if err != nil {
			t.Fatal(err)
		}
		d.stopCb()
		// The server waits its auth timeout for an answer; the client
		// must wait longer to see the refusal rather than its own timeout.
		c, err := d.dial("while-down", nats.Token(key), auth.InboxPrefix(prefix, auth.RoleSubmitter, "a"), nats.Timeout(bound))
		if err == nil {
			c.Close()
			t.Fatal("connected while eryx-auth is down")
		}
		// Usually "Authorization Violation"; on a slow machine the
		// server's keep-alive PING can reach the client first. Either
		// way the connection was not let in.
		t.Logf("refused: %v", err)
	})
}

// TestCalloutTenantRecreatedKeyOrphan checks the tenant-uid guard: a key
// record left behind by a failed removal does not come back with a new
// tenant of the same name.
func TestCalloutOrphanKey(t *testing.T) {
	ctx := context.Background()
	d := calloutDeployment(t)
	if _, err := d.store.AddTenant(ctx, auth.Tenant{Name: "c"}); err != nil {
		t.Fatal(err)
	}
	key, _, err := d.store.IssueKey(ctx, auth.KeySpec{Role: auth.RoleSubmitter, Tenant: "c"})
	if err != nil {
		t.Fatal(err)
	}
	// Remove the tenant's record only (what a removal interrupted between
	// its two steps leaves), then re-create the name.
	adm := d.connect(t, admin)
	kv, err := adm.js.KeyValue(ctx, "ERYX_AUTH")
	if err != nil {
		t.Fatal(err)
	}
	if err := kv.Delete(ctx, "tenants.c"); err != nil {
		t.Fatal(err)
	}
	refusedWith(t, d, key, "unknown tenant")
	if _, err := d.store.AddTenant(ctx, auth.Tenant{Name: "c"}); err != nil {
		t.Fatal(err)
	}
	refusedWith(t, d, key, "was removed after key")
}

// TestAuthorizeBadRequests feeds the handler requests no server would
// send: they get no answer at all.
func TestAuthorizeBadRequests(t *testing.T) {
	issuer, _ := nkeys.CreateAccount()
	co := &auth.Callout{Issuer: issuer, Account: auth.DefaultAccount, Prefix: prefix, Store: &auth.Store{}}
	user, _ := nkeys.CreateUser()
	upub, _ := user.PublicKey()
	serverKP, _ := nkeys.CreateServer()
	signed := func(kp nkeys.KeyPair, expires time.Duration) []byte {
		rc := jwt.NewAuthorizationRequestClaims("x")
		rc.UserNkey = upub
		rc.Server.ID = "S"
		rc.Expires = time.Now().Add(expires).Unix()
		s, err := rc.Encode(kp)
		if err != nil {
			t.Fatal(err)
		}
		return []byte(s)
	}
	for _, tc := range []struct {
		name string
		data []byte
	}{
		{"empty", nil},
		{"garbage", []byte("not a jwt")},
		{"oversized", []byte(strings.Repeat("e", auth.MaxRequestBytes+1))},
		{"tampered", tamper(signed(serverKP, time.Minute))},
		{"expired", signed(serverKP, -time.Minute)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, _, err := co.Authorize(context.Background(), tc.data); !errors.Is(err, auth.ErrBadRequest) {
				t.Fatalf("want ErrBadRequest, got %v", err)
			}
		})
	}
}

// TestWorkerReadsQuotas: workers read tenants' quotas, never the keys.
func TestWorkerReadsQuotas(t *testing.T) {
	ctx := context.Background()
	d := calloutDeployment(t)
	if _, err := d.store.SetQuotas(ctx, "a", auth.Quotas{MaxRunning: 2}); err != nil {
		t.Fatal(err)
	}
	w := d.connect(t, worker)
	ts, err := auth.OpenTenantStore(ctx, w.js, prefix)
	if err != nil {
		t.Fatalf("worker opening the tenant store: %v", err)
	}
	q, err := ts.Quotas(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	want := auth.DefaultQuotas
	want.MaxRunning = 2
	if q != want {
		t.Fatalf("quotas %+v, want %+v", q, want)
	}
	if q, err := ts.Quotas(ctx, "nobody"); !errors.Is(err, auth.ErrUnknownTenant) || q != auth.DefaultQuotas {
		t.Fatalf("unknown tenant: %+v %v", q, err)
	}
	keys, err := d.store.Keys(ctx)
	if err != nil || len(keys) == 0 {
		t.Fatalf("keys: %v", err)
	}
	subj := "$JS.API.DIRECT.GET.KV_ERYX_AUTH.$KV.ERYX_AUTH.keys." + keys[0].ID
	_ = w.PublishRequest(subj, w.NewInbox(), nil)
	w.violation(t, "worker reading a key record", subj)
	a := d.connect(t, tenantA)
	refused(t, a, "tenant reading quotas", "$JS.API.STREAM.INFO.KV_ERYX_AUTH", func(ctx context.Context) error {
		_, err := auth.OpenTenantStore(ctx, a.js, prefix)
		return err
	})
}

func TestQuotaDefaults(t *testing.T) {
	if got := (auth.Quotas{}).WithDefaults(); got != auth.DefaultQuotas {
		t.Fatalf("zero quotas: %+v", got)
	}
	got := auth.Quotas{MaxQueued: 5, MemoryPerJob: 1 << 20}.WithDefaults()
	if got.MaxQueued != 5 || got.MemoryPerJob != 1<<20 || got.MaxRunning != auth.DefaultQuotas.MaxRunning {
		t.Fatalf("%+v", got)
	}
	ctx := context.Background()
	d := calloutDeployment(t)
	if _, err := d.store.AddTenant(ctx, auth.Tenant{Name: "neg", Quotas: auth.Quotas{MaxRunning: -1}}); !errors.Is(err, auth.ErrInvalid) {
		t.Fatalf("negative quota: %v", err)
	}
	if _, err := d.store.AddTenant(ctx, auth.Tenant{Name: "a"}); !errors.Is(err, auth.ErrTenantExists) {
		t.Fatalf("duplicate tenant: %v", err)
	}
}

// tamper changes the JWT's payload under its signature.
func tamper(tok []byte) []byte {
	out := append([]byte(nil), tok...)
	i := strings.IndexByte(string(out), '.') + 5
	if out[i] == 'A' {
		out[i] = 'B'
	} else {
		out[i] = 'A'
	}
	return out
}
