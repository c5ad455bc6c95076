package netgate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"time"
)

func decode(payload []byte, v any) error {
	if err := json.Unmarshal(payload, v); err != nil {
		return guestError(errInvalidInput, "malformed network request: %v", err)
	}
	return nil
}

// opResolve serves getaddrinfo: the name must be allowed (on some port)
// and every address it resolves to must be reachable.
func (s *Session) opResolve(ctx context.Context, payload []byte) (any, error) {
	var req resolveReq
	if err := decode(payload, &req); err != nil {
		return nil, err
	}
	t, err := parseTarget(req.Host)
	if err != nil {
		return nil, guestError(errGAI, "%v", err)
	}
	if t.ip.IsValid() {
		// A literal needs no lookup; connecting to it is judged then.
		return resolveReply{Addresses: []string{t.ip.String()}}, nil
	}
	if r := s.pol.checkName(t); r != nil {
		return nil, r
	}
	addrs, err := s.lookup(ctx, t.name, req.Family)
	if err != nil {
		return nil, err
	}
	s.remember(t.name, addrs)
	out := resolveReply{Addresses: make([]string, len(addrs))}
	for i, a := range addrs {
		out.Addresses[i] = a.String()
	}
	return out, nil
}

// opConnect opens a TCP connection (and optionally TLS over it).
func (s *Session) opConnect(ctx context.Context, payload []byte) (any, error) {
	var req connectReq
	if err := decode(payload, &req); err != nil {
		return nil, err
	}
	t, err := parseTarget(req.Host)
	if err != nil {
		return nil, refuse(ErrNotAllowed, req.Host, err.Error())
	}
	// Authorise by name first: the allow-list, then the port.
	var addrs []netip.Addr
	named := t
	if t.ip.IsValid() {
		judged := t
		if name, ok := s.resolvedName(t.ip); ok {
			judged = target{name: name} // an address this session resolved for an allowed name
		}
		if r := s.pol.checkHost(judged, req.Port); r != nil {
			return nil, r
		}
		named = judged
		if r := s.pol.checkAddr(t.String(), t.ip); r != nil {
			return nil, r
		}
		addrs = []netip.Addr{t.ip}
	} else if r := s.pol.checkHost(t, req.Port); r != nil {
		return nil, r
	}
	cctx, cancel := context.WithTimeout(ctx, s.connectTimeout(req.Timeout))
	defer cancel()
	if addrs == nil {
		if addrs, err = s.lookup(cctx, t.name, req.Family); err != nil {
			return nil, err
		}
	}
	if err := s.countConnection(t.String()); err != nil {
		return nil, err
	}
	c, peer, err := s.dial(cctx, t.String(), addrs, req.Port)
	if err != nil {
		return nil, err
	}
	cn := &conn{raw: c, c: c, host: t, port: req.Port, peer: peer, named: named}
	reply := connectReply{Peer: peer.Addr().String(), Port: int(peer.Port()), Family: 4}
	if peer.Addr().Is6() {
		reply.Family = 6
	}
	if req.TLS != nil {
		tc, info, err := s.handshake(cctx, *cn, *req.TLS)
		if err != nil {
			_ = c.Close()
			return nil, err
		}
		cn.c, cn.tls, reply.TLS = tc, true, info // not shared yet: no lock needed
		cn.setTLS(*req.TLS)
	}
	if reply.ID, err = s.add(cn); err != nil {
		return nil, err
	}
	return reply, nil
}

func (s *Session) countConnection(host string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stats.Connections >= s.pol.MaxConnections {
		return refuse(ErrLimit, host, fmt.Sprintf("connection limit reached: an execution may open at most %d connections", s.pol.MaxConnections))
	}
	s.stats.Connections++
	return nil
}

// opStartTLS upgrades a connection to TLS, verified on the host.
func (s *Session) opStartTLS(ctx context.Context, payload []byte) (any, error) {
	var req startTLSReq
	if err := decode(payload, &req); err != nil {
		return nil, err
	}
	cn, err := s.get(req.ID)
	if err != nil {
		return nil, err
	}
	if cn.tls {
		return nil, guestError(errSSL, "[SSL] the connection already uses TLS")
	}
	// Plaintext held back by the secret rewriting goes before the handshake.
	cn.flushSecrets()
	cctx, cancel := context.WithTimeout(ctx, s.connectTimeout(req.Timeout))
	defer cancel()
	tc, info, err := s.handshake(cctx, cn, req.tlsParams)
	if err != nil {
		// A failed handshake leaves nothing usable behind.
		s.remove(req.ID)
		return nil, err
	}
	if err := s.upgrade(req.ID, cn, tc, req.tlsParams); err != nil {
		return nil, err
	}
	return info, nil
}

// opSend writes one chunk.
func (s *Session) opSend(payload []byte) (any, error) {
	var req sendReq
	if err := decode(payload, &req); err != nil {
		return nil, err
	}
	if len(req.Data) > MaxChunk {
		return nil, guestError(errInvalidInput, "send of %d bytes exceeds the %d-byte chunk limit", len(req.Data), MaxChunk)
	}
	cn, err := s.get(req.ID)
	if err != nil {
		return nil, err
	}
	c := cn.c
	if len(req.Data) == 0 {
		return sendReply{}, nil
	}
	n := int64(len(req.Data))
	s.mu.Lock()
	if s.stats.BytesOut+n > s.pol.MaxBytesOut {
		sent := s.stats.BytesOut
		s.mu.Unlock()
		return nil, refuse(ErrLimit, cn.host.String(), fmt.Sprintf(
			"send limit reached: an execution may send at most %d bytes (%d sent, %d more refused)", s.pol.MaxBytesOut, sent, n))
	}
	s.stats.BytesOut += n
	s.mu.Unlock()

	d, nonBlocking := s.ioTimeout(req.Timeout)
	_ = c.SetWriteDeadline(time.Now().Add(d))
	if cn.sub != nil {
		// Placeholders become values here, for a bound host only. The
		// code's bytes are taken whole (some may be held back until the
		// next send), so it is told they were all sent.
		out := cn.sub.out.push(req.Data)
		if _, err := c.Write(out); err != nil {
			return nil, ioError(err, "send", d, nonBlocking)
		}
		return sendReply{Sent: len(req.Data)}, nil
	}
	written, err := c.Write(req.Data)
	if unsent := n - int64(written); unsent > 0 {
		s.mu.Lock()
		s.stats.BytesOut -= unsent
		s.mu.Unlock()
	}
	if err != nil && written == 0 {
		return nil, ioError(err, "send", d, nonBlocking)
	}
	return sendReply{Sent: written}, nil
}

// opRecv reads up to one chunk; empty data is the end of the stream.
func (s *Session) opRecv(payload []byte) (any, error) {
	var req recvReq
	if err := decode(payload, &req); err != nil {
		return nil, err
	}
	if req.Max <= 0 {
		return nil, guestError(errInvalidInput, "receive size must be positive, got %d", req.Max)
	}
	cn, err := s.get(req.ID)
	if err != nil {
		return nil, err
	}
	c := cn.c
	want := int64(min(req.Max, MaxChunk))
	// Reserve the bytes before reading, so that concurrent receives cannot
	// overshoot the cap together. With the cap spent, a one-byte probe
	// still tells a clean end of stream from more data.
	s.mu.Lock()
	remaining := s.pol.MaxBytesIn - s.stats.BytesIn
	probe := remaining <= 0
	switch {
	case probe:
		want = 1
	case remaining < want:
		want = remaining
	}
	if !probe {
		s.stats.BytesIn += want
	}
	s.mu.Unlock()

	cn.flushSecrets() // the code waits for a reply to what it sent
	d, nonBlocking := s.ioTimeout(req.Timeout)
	_ = c.SetReadDeadline(time.Now().Add(d))
	buf := make([]byte, want)
	n, err := 0, error(nil)
	for n == 0 && err == nil { // a zero-length read is neither data nor the end; the deadline bounds this
		n, err = c.Read(buf)
	}
	if !probe && int64(n) < want {
		s.mu.Lock()
		s.stats.BytesIn -= want - int64(n)
		s.mu.Unlock()
	}
	if n > 0 {
		if probe {
			return nil, refuse(ErrLimit, cn.host.String(), fmt.Sprintf(
				"receive limit reached: an execution may receive at most %d bytes", s.pol.MaxBytesIn))
		}
		data := buf[:n]
		if cn.sub != nil {
			data = cn.sub.in.push(data) // a reflected value reads as its placeholder
		}
		return recvReply{Data: data}, nil
	}
	switch {
	case errors.Is(err, io.EOF):
		return recvReply{Data: []byte{}}, nil
	case errors.Is(err, io.ErrUnexpectedEOF) && cn.tls:
		return nil, guestError(errSSLEOF, "EOF occurred in violation of protocol: the peer closed without a TLS close_notify")
	}
	return nil, ioError(err, "recv", d, nonBlocking)
}

// opShutdown half-closes a connection.
func (s *Session) opShutdown(payload []byte) (any, error) {
	var req shutdownReq
	if err := decode(payload, &req); err != nil {
		return nil, err
	}
	cn, err := s.get(req.ID)
	if err != nil {
		return nil, err
	}
	c := cn.c
	if req.How < 0 || req.How > 2 {
		return nil, guestError(errInvalidInput, "shutdown: invalid 'how' %d", req.How)
	}
	tcp, _ := cn.raw.(*net.TCPConn)
	if req.How != 1 && tcp != nil { // SHUT_RD or SHUT_RDWR
		_ = tcp.CloseRead()
	}
	if req.How != 0 { // SHUT_WR or SHUT_RDWR
		cn.flushSecrets()
		if cw, ok := c.(interface{ CloseWrite() error }); ok && c != cn.raw {
			_ = cw.CloseWrite() // TLS close_notify
		}
		if tcp != nil {
			_ = tcp.CloseWrite()
		}
	}
	return nil, nil
}

// opClose closes a connection; closing an unknown one is not an error.
func (s *Session) opClose(payload []byte) (any, error) {
	var req closeReq
	if err := decode(payload, &req); err != nil {
		return nil, err
	}
	s.remove(req.ID)
	return nil, nil
}
