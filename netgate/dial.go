package netgate

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"os"
	"slices"
	"syscall"
	"time"
)

// lookup resolves an allowed name and checks every address it resolves
// to: one blocked address refuses the name, because a name that mixes
// public and internal addresses is exactly what a rebinding attack looks
// like. The caller dials only addresses returned here.
func (s *Session) lookup(ctx context.Context, name string, family int) ([]netip.Addr, error) {
	s.mu.Lock()
	s.resolves++
	n := s.resolves
	s.mu.Unlock()
	if n > maxResolves {
		return nil, refuse(ErrLimit, name, fmt.Sprintf("lookup limit reached: an execution may resolve at most %d names", maxResolves))
	}
	network := "ip"
	switch family {
	case 4:
		network = "ip4"
	case 6:
		network = "ip6"
	}
	ctx, cancel := context.WithTimeout(ctx, s.pol.ConnectTimeout)
	defer cancel()
	found, err := s.g.resolver.LookupNetIP(ctx, network, name)
	if err != nil {
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return nil, guestError(errGAI, "cannot resolve %s: timed out after %v", quote(name), s.pol.ConnectTimeout)
		}
		return nil, guestError(errGAI, "cannot resolve %s: %v", quote(name), unwrapDNS(err))
	}
	var addrs []netip.Addr
	for _, a := range found {
		a = a.WithZone("")
		if family == 4 && !a.Unmap().Is4() || family == 6 && (a.Is4() || a.Is4In6()) {
			continue
		}
		if !slices.Contains(addrs, a) {
			addrs = append(addrs, a)
		}
	}
	if len(addrs) == 0 {
		return nil, guestError(errGAI, "cannot resolve %s: no %s address", quote(name), map[int]string{0: "IP", 4: "IPv4", 6: "IPv6"}[family])
	}
	for _, a := range addrs {
		if r := s.pol.checkAddr(name, a); r != nil {
			return nil, r
		}
	}
	return addrs, nil
}

// unwrapDNS keeps the resolver's own words and drops Go's "lookup x on
// 10.0.0.2:53:" preamble, which would tell the guest the host's resolver.
func unwrapDNS(err error) string {
	var dns *net.DNSError
	if errors.As(err, &dns) {
		if dns.IsNotFound {
			return "no such host"
		}
		return dns.Err
	}
	return err.Error()
}

// dial connects to the first reachable address of addrs, each of which
// has been checked. The dialer's control hook checks again, on the exact
// address the socket is about to connect to: a second line that holds
// even if a bug upstream let an unchecked address through.
func (s *Session) dial(ctx context.Context, host string, addrs []netip.Addr, port int) (net.Conn, netip.AddrPort, error) {
	var last error
	for _, a := range addrs {
		ap := netip.AddrPortFrom(a.Unmap(), uint16(port))
		d := net.Dialer{ControlContext: s.control(ap)}
		c, err := d.DialContext(ctx, "tcp", ap.String())
		if err == nil {
			return c, ap, nil
		}
		last = err
		if ctx.Err() != nil {
			break
		}
	}
	return nil, netip.AddrPort{}, dialError(ctx, host, port, last)
}

// control is the dialer's last check before connect(2).
func (s *Session) control(want netip.AddrPort) func(ctx context.Context, network, address string, c syscall.RawConn) error {
	return func(_ context.Context, _, address string, _ syscall.RawConn) error {
		got, err := netip.ParseAddrPort(address)
		if err != nil || got.Addr().Unmap() != want.Addr() || got.Port() != want.Port() {
			return refuse(ErrBlockedAddress, address, fmt.Sprintf("refusing to dial %s: not the checked address %s", address, want))
		}
		if r := s.pol.checkAddr(got.Addr().String(), got.Addr()); r != nil {
			return r
		}
		return nil
	}
}

func dialError(ctx context.Context, host string, port int, err error) error {
	var r *RefusalError
	if errors.As(err, &r) {
		return r
	}
	where := fmt.Sprintf("%s port %d", quote(host), port)
	switch {
	case isTimeout(err) || errors.Is(ctx.Err(), context.DeadlineExceeded):
		return guestError(errTimeout, "timed out connecting to %s", where)
	case errors.Is(err, context.Canceled):
		return guestError(errAborted, "connecting to %s was cancelled: the execution is ending", where)
	case errors.Is(err, syscall.ECONNREFUSED):
		return guestError(errRefused, "connection to %s refused", where)
	case errors.Is(err, syscall.ENETUNREACH), errors.Is(err, syscall.EHOSTUNREACH):
		return guestError(errUnreachable, "%s is unreachable", where)
	case errors.Is(err, syscall.ECONNRESET):
		return guestError(errReset, "connection to %s reset", where)
	}
	return guestError(errNet, "cannot connect to %s: %v", where, err)
}

// ioError types a send or receive error for the guest.
func ioError(err error, what string, timeout time.Duration, nonBlocking bool) error {
	switch {
	case isTimeout(err) && nonBlocking:
		return guestError(errWouldBlock, "%s would block (non-blocking socket)", what)
	case isTimeout(err):
		return guestError(errTimeout, "timed out (%s: nothing for %v)", what, timeout)
	case errors.Is(err, net.ErrClosed):
		return guestError(errBadConn, "%s on a closed connection", what)
	case errors.Is(err, syscall.ECONNRESET):
		return guestError(errReset, "connection reset by peer")
	case errors.Is(err, syscall.EPIPE):
		return guestError(errBrokenPipe, "broken pipe: the peer closed the connection")
	case errors.Is(err, syscall.ECONNABORTED):
		return guestError(errAborted, "connection aborted")
	}
	if te := tlsAlert(err); te != "" {
		return guestError(errSSL, "[SSL] %s", te)
	}
	return guestError(errNet, "%s failed: %v", what, err)
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, context.DeadlineExceeded) ||
		errors.As(err, &ne) && ne.Timeout()
}

// ioTimeout is the deadline of one send or receive: the policy's I/O
// timeout, or the guest's socket timeout when shorter. A zero guest timeout
// is a non-blocking socket, which gets a token wait.
func (s *Session) ioTimeout(guest *float64) (time.Duration, bool) {
	d := s.pol.IOTimeout
	if guest == nil {
		return d, false
	}
	if *guest <= 0 {
		return time.Millisecond, true
	}
	if g := secondsToDuration(*guest); g < d {
		d = g
	}
	return d, false
}

// connectTimeout is the deadline of connecting (resolving, dialing, TLS).
func (s *Session) connectTimeout(guest *float64) time.Duration {
	d := s.pol.ConnectTimeout
	if guest != nil && *guest > 0 {
		if g := secondsToDuration(*guest); g < d {
			d = g
		}
	}
	return d
}

func secondsToDuration(sec float64) time.Duration {
	if math.IsNaN(sec) || sec > float64(time.Duration(1<<62))/float64(time.Second) {
		return time.Duration(1 << 62)
	}
	return time.Duration(sec * float64(time.Second))
}
