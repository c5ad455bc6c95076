package netgate

import (
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Policy says where sandboxed code may connect. The zero Policy denies
// everything. Zero limits take the defaults below (which are limits, never
// "unlimited"); negative values are invalid.
type Policy struct {
	// AllowHosts are allow-list entries (see ParseHostList): "host",
	// "*.domain", "*", an address literal, each with an optional ":port".
	// Empty means no network at all.
	AllowHosts []string
	// AllowPorts are the ports allowed for entries without a port of their
	// own. Empty means DefaultAllowPorts (80 and 443).
	AllowPorts []int
	// MaxConnections caps the connections an execution opens (attempts
	// that pass the policy, counted over the whole execution).
	MaxConnections int
	// ConnectTimeout bounds resolving, connecting and the TLS handshake.
	ConnectTimeout time.Duration
	// IOTimeout bounds each send and receive; the guest's own socket
	// timeout applies when it is shorter.
	IOTimeout time.Duration
	// MaxBytesIn and MaxBytesOut cap the payload bytes (after TLS) an
	// execution receives and sends, over all its connections.
	MaxBytesIn  int64
	MaxBytesOut int64
	// AllowLoopback lets connections reach 127.0.0.0/8 and ::1: a
	// development opt-in, for tests against local servers.
	AllowLoopback bool
	// AllowPrivate lets connections reach RFC 1918, unique-local IPv6 and
	// carrier-grade NAT space, for clusters whose services live there.
	// Link-local (cloud metadata) stays blocked regardless.
	AllowPrivate bool
	// ExtraCACerts are PEM certificates trusted in addition to the system
	// pool (a private CA, a test CA).
	ExtraCACerts []byte
}

// Defaults of a Policy's zero fields.
const (
	DefaultMaxConnections = 32
	DefaultConnectTimeout = 10 * time.Second
	DefaultIOTimeout      = 30 * time.Second
	DefaultMaxBytesIn     = 64 << 20
	DefaultMaxBytesOut    = 16 << 20
)

// DefaultAllowPorts are the ports of entries without one when AllowPorts
// is empty: HTTP and HTTPS.
func DefaultAllowPorts() []int { return []int{80, 443} }

// Enabled reports whether the policy allows any host.
func (p Policy) Enabled() bool { return len(p.AllowHosts) > 0 }

// WithDefaults returns p with its zero fields set to the defaults, so that
// every value is explicit.
func (p Policy) WithDefaults() Policy {
	p.AllowHosts = slices.Clone(p.AllowHosts)
	if len(p.AllowPorts) == 0 {
		p.AllowPorts = DefaultAllowPorts()
	} else {
		p.AllowPorts = sortedPorts(p.AllowPorts)
	}
	if p.MaxConnections == 0 {
		p.MaxConnections = DefaultMaxConnections
	}
	if p.ConnectTimeout == 0 {
		p.ConnectTimeout = DefaultConnectTimeout
	}
	if p.IOTimeout == 0 {
		p.IOTimeout = DefaultIOTimeout
	}
	if p.MaxBytesIn == 0 {
		p.MaxBytesIn = DefaultMaxBytesIn
	}
	if p.MaxBytesOut == 0 {
		p.MaxBytesOut = DefaultMaxBytesOut
	}
	p.ExtraCACerts = slices.Clone(p.ExtraCACerts)
	return p
}

// Validate reports the first malformed setting, wrapping ErrInvalidPolicy.
func (p Policy) Validate() error {
	for _, h := range p.AllowHosts {
		if _, err := parseEntry(h); err != nil {
			return err
		}
	}
	for _, port := range p.AllowPorts {
		if port < 1 || port > 65535 {
			return fmt.Errorf("%w: port %d is not between 1 and 65535", ErrInvalidPolicy, port)
		}
	}
	switch {
	case p.MaxConnections < 0:
		return fmt.Errorf("%w: negative MaxConnections", ErrInvalidPolicy)
	case p.ConnectTimeout < 0 || p.IOTimeout < 0:
		return fmt.Errorf("%w: negative timeout", ErrInvalidPolicy)
	case p.MaxBytesIn < 0 || p.MaxBytesOut < 0:
		return fmt.Errorf("%w: negative byte limit", ErrInvalidPolicy)
	}
	if len(p.ExtraCACerts) > 0 {
		if _, err := parseCerts(p.ExtraCACerts); err != nil {
			return err
		}
	}
	return nil
}

// parseCerts decodes every certificate of a PEM bundle; a bundle holding
// none is an error, since it is surely a mistake.
func parseCerts(pemData []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	rest := pemData
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%w: extra CA certificate: %w", ErrInvalidPolicy, err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, fmt.Errorf("%w: the extra CA data holds no PEM certificate", ErrInvalidPolicy)
	}
	return certs, nil
}

// CheckHost reports whether the code may connect to host on port, as far
// as names go; the addresses are checked separately (CheckAddr). The error
// is a *RefusalError.
func (p Policy) CheckHost(host string, port int) error {
	c, err := p.compile()
	if err != nil {
		return err
	}
	t, err := parseTarget(host)
	if err != nil {
		return refuse(ErrNotAllowed, host, err.Error())
	}
	if r := c.checkHost(t, port); r != nil {
		return r
	}
	return nil
}

// CheckAddr reports whether an address is reachable under the policy's
// blocked ranges and opt-ins. The error is a *RefusalError.
func (p Policy) CheckAddr(a netip.Addr) error {
	if r := p.checkAddr(a.String(), a); r != nil {
		return r
	}
	return nil
}

// checkAddr judges address a, reached through host (which may be the
// address itself).
func (p Policy) checkAddr(host string, a netip.Addr) *RefusalError {
	if a.Zone() != "" {
		return refuse(ErrBlockedAddress, host, fmt.Sprintf("address %s has a zone, refused", a))
	}
	c := Classify(a)
	switch {
	case c.Class == ClassPublic,
		c.Class == ClassLoopback && p.AllowLoopback,
		(c.Class == ClassPrivate || c.Class == ClassSharedNAT) && p.AllowPrivate:
		return nil
	}
	if host == a.String() {
		return refuse(ErrBlockedAddress, host, fmt.Sprintf("address %s is not reachable from the sandbox, refused", c.describe(a)))
	}
	return refuse(ErrBlockedAddress, host, fmt.Sprintf("host %s resolves to %s, refused", quote(host), c.describe(a)))
}

// compiled is a policy with defaults applied and entries parsed, as a
// Session uses it.
type compiled struct {
	Policy
	entries []hostEntry
}

func (p Policy) compile() (*compiled, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	c := &compiled{Policy: p.WithDefaults()}
	for _, h := range p.AllowHosts {
		e, _ := parseEntry(h) // validated above
		c.entries = append(c.entries, e)
	}
	return c, nil
}

// checkName applies the allow-list to a name, whatever the port (for
// lookups, which know no port yet).
func (c *compiled) checkName(t target) *RefusalError {
	host := t.String()
	if len(c.entries) == 0 {
		return refuse(ErrDisabled, host, "networking is disabled for this execution (no host is allowed)")
	}
	for _, e := range c.entries {
		if e.matches(t) {
			return nil
		}
	}
	return refuse(ErrNotAllowed, host, fmt.Sprintf("host %s is not in the allow-list", quote(host)))
}

// checkHost applies the allow-list to a host and port.
func (c *compiled) checkHost(t target, port int) *RefusalError {
	host := t.String()
	if len(c.entries) == 0 {
		return refuse(ErrDisabled, host, "networking is disabled for this execution (no host is allowed)")
	}
	if port < 1 || port > 65535 {
		return refuse(ErrNotAllowed, host, fmt.Sprintf("port %d is not a valid TCP port", port))
	}
	var ports []int
	matched := false
	for _, e := range c.entries {
		if !e.matches(t) {
			continue
		}
		matched = true
		if e.port == 0 {
			if slices.Contains(c.AllowPorts, port) {
				return nil
			}
			ports = append(ports, c.AllowPorts...)
		} else {
			if e.port == port {
				return nil
			}
			ports = append(ports, e.port)
		}
	}
	if !matched {
		return refuse(ErrNotAllowed, host, fmt.Sprintf("host %s is not in the allow-list", quote(host)))
	}
	return refuse(ErrNotAllowed, host, fmt.Sprintf("port %d is not allowed for host %s (allowed: %s)",
		port, quote(host), portList(sortedPorts(ports))))
}

func sortedPorts(ports []int) []int {
	out := slices.Clone(ports)
	slices.Sort(out)
	return slices.Compact(out)
}

func portList(ports []int) string {
	s := make([]string, len(ports))
	for i, p := range ports {
		s[i] = strconv.Itoa(p)
	}
	return strings.Join(s, ", ")
}
