package netgate

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/eryx-dev/eryx/runtime/sandbox"
)

var _ sandbox.HostHandler = (*Session)(nil)

// Per-execution bounds that are not policy settings.
const (
	// maxResolves bounds the name lookups of one execution.
	maxResolves = 1024
	// maxRemembered bounds the resolved addresses a session remembers.
	maxRemembered = 1024
	// maxCAPools bounds the per-context trust stores a session caches.
	maxCAPools = 8
)

// Session serves the network operations of one execution: it implements
// sandbox.HostHandler. It is safe for concurrent use; everything it opened
// is closed when the execution's context ends or Close is called.
type Session struct {
	g   *Gateway
	pol *compiled

	mu       sync.Mutex
	closed   bool
	conns    map[int]*conn
	nextID   int
	stats    Stats
	resolves int
	// resolved maps the addresses net.resolve returned (checked, for an
	// allowed name) to that name, so that code which resolves first and
	// connects to the address (the stdlib's create_connection) is judged
	// by the name it resolved.
	resolved  map[netip.Addr]string
	caPools   map[[32]byte]*x509.CertPool
	secrets   *JobSecrets
	watchOnce sync.Once
	stopWatch func() bool
}

// Stats are a session's counters.
type Stats struct {
	// Connections counts connection attempts that passed the policy.
	Connections int
	// Refusals counts refused operations (policy and limits).
	Refusals int
	// BytesIn and BytesOut count payload bytes received and sent.
	BytesIn, BytesOut int64
}

// conn is one connection of the guest.
type conn struct {
	raw  net.Conn // the TCP connection
	c    net.Conn // what I/O goes through: raw, or TLS over it
	host target   // what the code connected to
	port int
	peer netip.AddrPort
	tls  bool
	// named is host, or the name this session resolved an address host
	// for: what secrets are bound by.
	named target
	// verified: TLS checked against the gateway's own trust store, with
	// the host name; serverName is the name it was checked for.
	verified   bool
	serverName string
	// sub rewrites the job's secrets on this connection; nil without any.
	sub *substitution
}

func newSession(g *Gateway, pol *compiled) *Session {
	return &Session{g: g, pol: pol, conns: make(map[int]*conn), resolved: make(map[netip.Addr]string),
		caPools: make(map[[32]byte]*x509.CertPool)}
}

// Policy returns the session's effective policy.
func (s *Session) Policy() Policy { return s.pol.WithDefaults() }

// GuestOptions returns the shims' configuration, for ExecOptions.Network.
func (s *Session) GuestOptions() json.RawMessage {
	b, _ := json.Marshal(GuestOptions{Enabled: s.pol.Enabled(), MaxChunk: MaxChunk})
	return b
}

// Stats returns the session's counters so far.
func (s *Session) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stats
}

// Close closes every connection; later operations fail. It is idempotent.
func (s *Session) Close() {
	s.mu.Lock()
	stop := s.stopWatch
	s.mu.Unlock()
	if stop != nil {
		stop()
	}
	s.closeAll()
}

func (s *Session) closeAll() {
	s.mu.Lock()
	s.closed = true
	conns := s.conns
	s.conns = make(map[int]*conn)
	s.mu.Unlock()
	for _, c := range conns {
		_ = c.raw.Close()
	}
}

// HostOp implements sandbox.HostHandler: the runtime refuses any other
// operation, and larger payloads, before copying them out of the guest.
func (s *Session) HostOp(op string) (int, bool) {
	switch op {
	case OpResolve, OpConnect, OpStartTLS, OpSend, OpRecv, OpShutdown, OpClose:
		return maxPayload, true
	}
	return 0, false
}

// HostCall implements sandbox.HostHandler.
func (s *Session) HostCall(ctx context.Context, op string, payload []byte) ([]byte, error) {
	// The context ends with the execution: that is when everything goes.
	s.watchOnce.Do(func() {
		stop := context.AfterFunc(ctx, s.closeAll)
		s.mu.Lock()
		s.stopWatch = stop
		s.mu.Unlock()
	})
	if len(payload) > maxPayload {
		return nil, guestError(errInvalidInput, "network request of %d bytes exceeds the %d-byte limit", len(payload), maxPayload)
	}
	var reply any
	var err error
	switch op {
	case OpResolve:
		reply, err = s.opResolve(ctx, payload)
	case OpConnect:
		reply, err = s.opConnect(ctx, payload)
	case OpStartTLS:
		reply, err = s.opStartTLS(ctx, payload)
	case OpSend:
		reply, err = s.opSend(payload)
	case OpRecv:
		reply, err = s.opRecv(payload)
	case OpShutdown:
		reply, err = s.opShutdown(payload)
	case OpClose:
		reply, err = s.opClose(payload)
	default:
		return nil, guestError("NotImplementedError", "unknown network operation %q", op)
	}
	if err != nil {
		return nil, s.toGuest(err)
	}
	return json.Marshal(reply)
}

// toGuest turns an operation's error into the typed error the shim raises,
// reporting refusals on the way.
func (s *Session) toGuest(err error) error {
	var r *RefusalError
	if errors.As(err, &r) {
		s.mu.Lock()
		s.stats.Refusals++
		s.mu.Unlock()
		if s.g.onRefusal != nil {
			s.g.onRefusal(r.KindName(), r.Host)
		}
		typ := errPolicy
		if errors.Is(r, ErrLimit) {
			typ = errLimit
		}
		return guestError(typ, "%s", r.Error())
	}
	var ce *sandbox.CallbackError
	if errors.As(err, &ce) {
		return ce
	}
	return guestError(errNet, "%v", err)
}

// add registers a connection; a session closed meanwhile (the execution
// ended while dialing) gets nothing.
func (s *Session) add(c *conn) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		_ = c.raw.Close()
		return 0, guestError(errBadConn, "the execution's network session is closed")
	}
	s.nextID++
	s.bindSecrets(c)
	s.conns[s.nextID] = c
	return s.nextID, nil
}

// get returns a snapshot of a connection: I/O uses the snapshot's net.Conn
// (safe for concurrent use) without holding the session's lock.
func (s *Session) get(id int) (conn, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.conns[id]
	if !ok {
		return conn{}, guestError(errBadConn, "connection %d is closed", id)
	}
	return *c, nil
}

// upgrade switches a connection's I/O to TLS, unless it changed meanwhile
// (closed, or upgraded by a concurrent call, which is misuse: the
// connection is then closed, since two handshakes garbled it).
func (s *Session) upgrade(id int, from conn, tc net.Conn, p tlsParams) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.conns[id]
	if !ok || c.raw != from.raw || c.tls {
		_ = from.raw.Close()
		return guestError(errBadConn, "connection %d changed during the TLS handshake", id)
	}
	c.c, c.tls = tc, true
	c.setTLS(p)
	s.bindSecrets(c)
	return nil
}

// setTLS records how a connection's TLS was verified.
func (c *conn) setTLS(p tlsParams) {
	c.verified = !p.Insecure && !p.NoCheckHostname && p.CAData == ""
	c.serverName = strings.TrimSuffix(p.ServerHostname, ".")
}

// bindSecrets (re)computes which of the job's secrets the connection
// carries, for its current state.
func (s *Session) bindSecrets(c *conn) {
	if s.secrets == nil || len(s.secrets.bound) == 0 {
		return
	}
	if c.sub == nil {
		c.sub = &substitution{}
	}
	c.sub.set(s.secrets.forConn(c))
}

// remove forgets a connection and closes it. Connections are closed at
// the TCP level, without a TLS close_notify, as CPython's close() does:
// tls.Conn.Close could wait seconds for a peer that stopped reading.
func (s *Session) remove(id int) {
	s.mu.Lock()
	c, ok := s.conns[id]
	delete(s.conns, id)
	s.mu.Unlock()
	if ok {
		c.flushSecrets()
		_ = c.raw.Close()
	}
}

// remember records addresses net.resolve returned for an allowed name.
func (s *Session) remember(name string, addrs []netip.Addr) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, a := range addrs {
		if len(s.resolved) >= maxRemembered {
			return
		}
		s.resolved[a.Unmap()] = name
	}
}

func (s *Session) resolvedName(a netip.Addr) (string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n, ok := s.resolved[a.Unmap()]
	return n, ok
}

// flushSecrets sends what the placeholder rewriting held back: the code is
// done sending for now (it reads, shuts down or closes).
func (c *conn) flushSecrets() {
	if c.sub == nil {
		return
	}
	if held := c.sub.out.flush(); len(held) > 0 {
		_ = c.c.SetWriteDeadline(time.Now().Add(time.Second))
		_, _ = c.c.Write(held)
	}
}
