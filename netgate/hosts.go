package netgate

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// An allow-list entry is a host pattern with an optional port:
//
//	"*"                    any host (blocked ranges still apply)
//	"*.example.org"        any subdomain of example.org, at any depth, but
//	                       not example.org itself
//	"api.example.com"      that name only
//	"203.0.113.7", "2001:db8::1", "[2001:db8::1]"   that address only
//	"10.20.0.0/16", "[fd00::/8]"   addresses in that range (only
//	                       addresses the code connects to by number; a
//	                       name is matched by name entries)
//
// each optionally followed by ":port" ("[v6]:port" for IPv6), which allows
// that one port instead of the policy's AllowPorts. Names are matched
// case-insensitively with any trailing dot removed, and only whole labels
// match: "*.example.org" does not match "evilexample.org".

type entryKind uint8

const (
	kindAny    entryKind = iota // "*"
	kindSuffix                  // "*.example.org": host holds "example.org"
	kindName                    // "api.example.com"
	kindIP                      // an address literal
	kindCIDR                    // an address range
)

// hostEntry is a parsed allow-list entry.
type hostEntry struct {
	kind entryKind
	host string       // normalised name or suffix (kindName, kindSuffix)
	ip   netip.Addr   // kindIP, unmapped
	cidr netip.Prefix // kindCIDR, masked
	port int          // 0: the policy's AllowPorts
}

// target is a host the code asked for: a name or an address.
type target struct {
	name string     // normalised, when the host is a name
	ip   netip.Addr // when the host is an address literal
}

func (t target) String() string {
	if t.ip.IsValid() {
		return t.ip.String()
	}
	return t.name
}

// parseTarget normalises a host the guest asked for.
func parseTarget(s string) (target, error) {
	h := strings.TrimSpace(s)
	if strings.HasPrefix(h, "[") && strings.HasSuffix(h, "]") {
		h = h[1 : len(h)-1]
	}
	if a, err := netip.ParseAddr(h); err == nil {
		if a.Zone() != "" {
			return target{}, fmt.Errorf("address %s has a zone, which is never reachable", quote(s))
		}
		return target{ip: a}, nil
	}
	name, err := normaliseName(h)
	if err != nil {
		return target{}, err
	}
	return target{name: name}, nil
}

// normaliseName lower-cases a DNS name, drops one trailing dot and checks
// its syntax. Non-ASCII names must arrive in punycode (the guest encodes
// them with IDNA first).
func normaliseName(s string) (string, error) {
	n := strings.ToLower(strings.TrimSuffix(s, "."))
	if n == "" || len(n) > 253 {
		return "", fmt.Errorf("invalid host name %s", quote(s))
	}
	labels := strings.Split(n, ".")
	for _, l := range labels {
		if l == "" || len(l) > 63 {
			return "", fmt.Errorf("invalid host name %s: empty or over-long label", quote(s))
		}
		for i := 0; i < len(l); i++ {
			if !isNameByte(l[i]) {
				return "", fmt.Errorf("invalid host name %s", quote(s))
			}
		}
	}
	// No top-level domain is numeric. Refusing names like "127.1",
	// "2130706433" or "0x7f.1" keeps a system resolver from reading them
	// as shorthand IPv4 (inet_aton) behind the allow-list's back.
	last := labels[len(labels)-1]
	if isDigits(last) || strings.HasPrefix(last, "0x") && isHex(last[2:]) {
		return "", fmt.Errorf("invalid host name %s: looks like a numeric address", quote(s))
	}
	return n, nil
}

// isNameByte: letters (already lower-cased), digits, '-' and '_' (which
// real service names use).
func isNameByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_'
}

func isDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}

func isHex(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// parseEntry parses one allow-list entry.
func parseEntry(s string) (hostEntry, error) {
	raw := strings.TrimSpace(s)
	host, port, err := splitEntryPort(raw)
	if err != nil {
		return hostEntry{}, err
	}
	e := hostEntry{port: port}
	switch {
	case host == "*":
		e.kind = kindAny
	case strings.Contains(host, "/"):
		pfx, err := netip.ParsePrefix(host)
		if err != nil || pfx.Addr().Zone() != "" {
			return hostEntry{}, fmt.Errorf("%w: entry %s: not an address range", ErrInvalidPolicy, quote(raw))
		}
		if pfx.Addr().Is4In6() && pfx.Bits() >= 96 {
			pfx = netip.PrefixFrom(pfx.Addr().Unmap(), pfx.Bits()-96)
		}
		e.kind, e.cidr = kindCIDR, pfx.Masked()
	case strings.HasPrefix(host, "*."):
		name, err := normaliseName(host[2:])
		if err != nil {
			return hostEntry{}, fmt.Errorf("%w: entry %s: %w", ErrInvalidPolicy, quote(raw), err)
		}
		e.kind, e.host = kindSuffix, name
	default:
		t, err := parseTarget(host)
		if err != nil {
			return hostEntry{}, fmt.Errorf("%w: entry %s: %w", ErrInvalidPolicy, quote(raw), err)
		}
		if t.ip.IsValid() {
			e.kind, e.ip = kindIP, t.ip.Unmap()
		} else {
			e.kind, e.host = kindName, t.name
		}
	}
	return e, nil
}

// splitEntryPort separates an optional ":port". A bare IPv6 address has
// colons of its own, so a port after IPv6 needs brackets.
func splitEntryPort(s string) (string, int, error) {
	if s == "" {
		return "", 0, fmt.Errorf("%w: empty allow-list entry", ErrInvalidPolicy)
	}
	host, portText := s, ""
	if strings.HasPrefix(s, "[") {
		end := strings.IndexByte(s, ']')
		if end < 0 {
			return "", 0, fmt.Errorf("%w: entry %s: missing ']'", ErrInvalidPolicy, quote(s))
		}
		host, portText = s[1:end], s[end+1:]
		if portText != "" && !strings.HasPrefix(portText, ":") {
			return "", 0, fmt.Errorf("%w: entry %s: text after ']'", ErrInvalidPolicy, quote(s))
		}
		portText = strings.TrimPrefix(portText, ":")
		_, aerr := netip.ParseAddr(host)
		_, perr := netip.ParsePrefix(host)
		if aerr != nil && perr != nil || !strings.Contains(host, ":") {
			return "", 0, fmt.Errorf("%w: entry %s: brackets hold only IPv6 addresses or ranges", ErrInvalidPolicy, quote(s))
		}
	} else if strings.Count(s, ":") == 1 {
		i := strings.IndexByte(s, ':')
		host, portText = s[:i], s[i+1:]
	}
	if portText == "" {
		if strings.HasSuffix(s, ":") {
			return "", 0, fmt.Errorf("%w: entry %s: empty port", ErrInvalidPolicy, quote(s))
		}
		return host, 0, nil
	}
	port, err := parsePort(portText)
	if err != nil {
		return "", 0, fmt.Errorf("%w: entry %s: %w", ErrInvalidPolicy, quote(s), err)
	}
	return host, port, nil
}

func parsePort(s string) (int, error) {
	p, err := strconv.Atoi(strings.TrimSpace(s))
	if err != nil || p < 1 || p > 65535 {
		return 0, fmt.Errorf("port %s is not between 1 and 65535", quote(s))
	}
	return p, nil
}

// String is the entry's canonical text.
func (e hostEntry) String() string {
	var h string
	switch e.kind {
	case kindAny:
		h = "*"
	case kindSuffix:
		h = "*." + e.host
	case kindName:
		h = e.host
	case kindIP:
		h = e.ip.String()
		if e.ip.Is6() && e.port != 0 {
			h = "[" + h + "]"
		}
	case kindCIDR:
		h = e.cidr.String()
		if e.cidr.Addr().Is6() && e.port != 0 {
			h = "[" + h + "]"
		}
	}
	if e.port != 0 {
		h += ":" + strconv.Itoa(e.port)
	}
	return h
}

// matches reports whether the entry's host pattern matches t (ports aside).
func (e hostEntry) matches(t target) bool {
	switch e.kind {
	case kindAny:
		return true
	case kindSuffix:
		return t.name != "" && strings.HasSuffix(t.name, "."+e.host)
	case kindName:
		return t.name != "" && t.name == e.host
	case kindIP:
		return t.ip.IsValid() && t.ip.Unmap() == e.ip
	case kindCIDR:
		return t.ip.IsValid() && e.cidr.Contains(t.ip.Unmap())
	}
	return false
}

// coversHost reports whether every host e matches is also matched by c.
func (c hostEntry) coversHost(e hostEntry) bool {
	switch {
	case c.kind == kindAny:
		return true
	case e.kind == kindAny:
		return false
	case c.kind == kindSuffix && e.kind == kindSuffix:
		return e.host == c.host || strings.HasSuffix(e.host, "."+c.host)
	case c.kind == kindSuffix && e.kind == kindName:
		return strings.HasSuffix(e.host, "."+c.host)
	case c.kind == kindName && e.kind == kindName:
		return c.host == e.host
	case c.kind == kindIP && e.kind == kindIP:
		return c.ip == e.ip
	case c.kind == kindCIDR && e.kind == kindIP:
		return c.cidr.Contains(e.ip)
	case c.kind == kindCIDR && e.kind == kindCIDR:
		// Prefixes are nested or disjoint.
		return c.cidr.Bits() <= e.cidr.Bits() && c.cidr.Contains(e.cidr.Addr())
	}
	return false
}

// ParseHostList parses a comma- or space-separated allow-list (the form of
// ERYX_NET_ALLOW_HOSTS) into canonical entries. An empty string is an
// empty list: no network.
func ParseHostList(s string) ([]string, error) {
	fields := strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' || r == '\t' || r == '\n' })
	out := make([]string, 0, len(fields))
	for _, f := range fields {
		e, err := parseEntry(f)
		if err != nil {
			return nil, err
		}
		out = append(out, e.String())
	}
	return out, nil
}

// ParsePortList parses a comma- or space-separated list of ports (the form
// of ERYX_NET_ALLOW_PORTS).
func ParsePortList(s string) ([]int, error) {
	fields := strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' || r == '\t' })
	out := make([]int, 0, len(fields))
	for _, f := range fields {
		p, err := parsePort(f)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrInvalidPolicy, err)
		}
		out = append(out, p)
	}
	return out, nil
}
