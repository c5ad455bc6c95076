package auth

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
)

// CalloutSubject is where the NATS server sends authorization requests.
const CalloutSubject = "$SYS.REQ.USER.AUTH"

// MaxRequestBytes bounds an authorization request: a server's request
// with a CONNECT's worth of options is a few KiB.
const MaxRequestBytes = 64 << 10

// ErrBadRequest marks an authorization request that is not a valid,
// server-signed, unexpired request; it gets no answer.
var ErrBadRequest = errors.New("auth: bad authorization request")

// Decision is what the callout decided about one connection, for logs,
// metrics and tests. Reason is the refusal's reason ("" when allowed).
type Decision struct {
	Allowed bool
	Reason  string
	Role    Role
	Tenant  string
	KeyID   string
	Client  string // the client's address
}

// Callout answers the NATS server's authorization requests: it maps the
// connect token (an API key) to a key record and issues a user JWT with
// that role's permissions, placed in Account.
type Callout struct {
	// Store holds the keys; read on every request.
	Store *Store
	// Issuer signs the user JWTs and responses: the account nkey whose
	// public key is the server's auth_callout issuer.
	Issuer nkeys.KeyPair
	// Account the users are placed in (the server config's account name).
	Account string
	// Prefix of the platform's subjects.
	Prefix string
	// UserTTL, if set, makes users expire: the server disconnects them
	// and their clients reconnect, authenticating anew (so a revoked key
	// loses its connections within UserTTL).
	UserTTL time.Duration
	// Observe, if set, is told every decision.
	Observe func(Decision)
	Log     *slog.Logger
	// Concurrency bounds requests handled at once (default 64).
	Concurrency int
}

// Serve answers requests on nc until ctx ends.
func (c *Callout) Serve(ctx context.Context, nc *nats.Conn) error {
	l, err := c.Listen(ctx, nc)
	if err != nil {
		return err
	}
	<-ctx.Done()
	l.Stop()
	return nil
}

// Listener is a running callout.
type Listener struct {
	sub *nats.Subscription
	wg  sync.WaitGroup
}

// Stop stops answering and waits for the requests being answered.
func (l *Listener) Stop() {
	_ = l.sub.Unsubscribe()
	l.wg.Wait()
}

// Listen subscribes to the authorization requests and returns once the
// server knows it. Replicas of eryx-auth share the requests (a queue
// group).
func (c *Callout) Listen(ctx context.Context, nc *nats.Conn) (*Listener, error) {
	if c.Issuer == nil || c.Store == nil || c.Account == "" {
		return nil, errors.New("auth: callout needs Store, Issuer and Account")
	}
	n := c.Concurrency
	if n <= 0 {
		n = 64
	}
	sem := make(chan struct{}, n)
	l := &Listener{}
	sub, err := nc.QueueSubscribe(CalloutSubject, "eryx-auth", func(m *nats.Msg) {
		sem <- struct{}{}
		l.wg.Add(1)
		go func() {
			defer func() { <-sem; l.wg.Done() }()
			c.handle(ctx, m)
		}()
	})
	if err != nil {
		return nil, fmt.Errorf("auth: subscribing to %s: %w", CalloutSubject, err)
	}
	l.sub = sub
	if err := nc.Flush(); err != nil {
		_ = sub.Unsubscribe()
		return nil, fmt.Errorf("auth: subscribing to %s: %w", CalloutSubject, err)
	}
	return l, nil
}

func (c *Callout) log() *slog.Logger {
	if c.Log != nil {
		return c.Log
	}
	return slog.Default()
}

func (c *Callout) handle(ctx context.Context, m *nats.Msg) {
	if m.Reply == "" {
		return
	}
	resp, d, err := c.Authorize(ctx, m.Data)
	if err != nil {
		c.log().Warn("auth: dropped authorization request", "error", err)
		return
	}
	if c.Observe != nil {
		c.Observe(d)
	}
	if d.Allowed {
		c.log().Info("auth: allowed", "role", d.Role, "tenant", d.Tenant, "key", d.KeyID, "client", d.Client)
	} else {
		c.log().Warn("auth: refused", "reason", d.Reason, "key", d.KeyID, "client", d.Client)
	}
	if err := m.Respond([]byte(resp)); err != nil {
		c.log().Warn("auth: answering authorization request", "error", err)
	}
}

// Authorize decides one request and returns the signed response. An
// undecodable, oversized, unsigned or expired request is an ErrBadRequest
// and gets no response (the server then refuses the connection when its
// auth timeout passes); everything else gets an answer, a refusal
// carrying its reason.
func (c *Callout) Authorize(ctx context.Context, data []byte) (string, Decision, error) {
	if len(data) > MaxRequestBytes {
		return "", Decision{}, fmt.Errorf("%w: %d bytes, more than %d", ErrBadRequest, len(data), MaxRequestBytes)
	}
	// Decoding checks the signature, and that a server key made it.
	rc, err := jwt.DecodeAuthorizationRequestClaims(string(data))
	if err != nil {
		return "", Decision{}, fmt.Errorf("%w: %w", ErrBadRequest, err)
	}
	vr := jwt.CreateValidationResults()
	rc.Validate(vr)
	if vr.IsBlocking(true) {
		return "", Decision{}, fmt.Errorf("%w: %v", ErrBadRequest, vr.Errors())
	}
	if !nkeys.IsValidPublicUserKey(rc.UserNkey) || rc.Server.ID == "" {
		return "", Decision{}, fmt.Errorf("%w: no user nkey or server id", ErrBadRequest)
	}
	d := Decision{Client: rc.ClientInformation.Host}
	userJWT, err := c.decide(ctx, rc, &d)
	out := jwt.NewAuthorizationResponseClaims(rc.UserNkey)
	out.Audience = rc.Server.ID
	if err != nil {
		d.Reason = err.Error()
		out.Error = d.Reason
	} else {
		d.Allowed = true
		out.Jwt = userJWT
	}
	resp, err := out.Encode(c.Issuer)
	if err != nil {
		return "", Decision{}, fmt.Errorf("auth: signing response: %w", err)
	}
	return resp, d, nil
}

// decide maps the request to a user JWT, or to the refusal's reason.
func (c *Callout) decide(ctx context.Context, rc *jwt.AuthorizationRequestClaims, d *Decision) (string, error) {
	token := rc.ConnectOptions.Token
	if token == "" {
		return "", errors.New("no API key: connect with the key as the token")
	}
	k, t, err := c.Store.Authenticate(ctx, token)
	if err != nil {
		return "", err
	}
	d.Role, d.KeyID = k.Role, k.ID
	if t != nil {
		d.Tenant = t.Name
	}
	perms, err := PermissionsFor(c.Prefix, k)
	if err != nil {
		return "", err
	}
	uc := jwt.NewUserClaims(rc.UserNkey)
	uc.Audience = c.Account
	uc.Name = string(k.Role) + ":" + k.ID
	if d.Tenant != "" {
		uc.Name = string(k.Role) + ":" + d.Tenant + ":" + k.ID
	}
	uc.Permissions = perms
	if c.UserTTL > 0 {
		uc.Expires = time.Now().Add(c.UserTTL).Unix()
	}
	vr := jwt.CreateValidationResults()
	uc.Validate(vr)
	if vr.IsBlocking(true) {
		return "", fmt.Errorf("auth: user claims invalid: %v", vr.Errors())
	}
	return uc.Encode(c.Issuer)
}
