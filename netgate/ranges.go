package netgate

import "net/netip"

// AddrClass is what kind of address an IP is, as far as the policy cares.
type AddrClass uint8

// Address classes. Only ClassPublic is reachable by default; loopback and
// private (with shared CGNAT space) have development opt-ins; the rest are
// never reachable.
const (
	ClassPublic        AddrClass = iota
	ClassLoopback                // 127.0.0.0/8, ::1
	ClassPrivate                 // RFC 1918, fc00::/7 (unique local)
	ClassSharedNAT               // 100.64.0.0/10 (carrier-grade NAT)
	ClassLinkLocal               // 169.254.0.0/16 (cloud metadata lives here), fe80::/10
	ClassMulticast               // 224.0.0.0/4, ff00::/8
	ClassUnspecified             // 0.0.0.0, ::
	ClassBroadcast               // 255.255.255.255
	ClassDocumentation           // TEST-NETs, 2001:db8::/32, 3fff::/20
	ClassReserved                // every other special-purpose or unallocated range
)

var classNames = [...]string{
	ClassPublic:        "public",
	ClassLoopback:      "loopback",
	ClassPrivate:       "private",
	ClassSharedNAT:     "carrier-grade NAT",
	ClassLinkLocal:     "link-local",
	ClassMulticast:     "multicast",
	ClassUnspecified:   "unspecified",
	ClassBroadcast:     "broadcast",
	ClassDocumentation: "documentation",
	ClassReserved:      "reserved",
}

func (c AddrClass) String() string {
	if int(c) < len(classNames) {
		return classNames[c]
	}
	return "unknown"
}

// Classification is the verdict on one address. Embedded is set when the
// address is an IPv6 form carrying an IPv4 address (mapped, compatible,
// translated, NAT64, 6to4); Class is then the embedded address's class.
type Classification struct {
	Class    AddrClass
	Embedded netip.Addr
	Form     string // "IPv4-mapped", "NAT64", "6to4", ...
}

type classRange struct {
	prefix netip.Prefix
	class  AddrClass
}

// v4Ranges and v6Ranges are checked in order; the first match wins, so a
// more specific prefix comes before the prefix that contains it. They are
// built by functions rather than held in package variables so that nothing
// can modify the tables.
func v4Ranges() []classRange {
	return []classRange{
		{mustPrefix("0.0.0.0/32"), ClassUnspecified},
		{mustPrefix("0.0.0.0/8"), ClassReserved}, // "this network"
		{mustPrefix("10.0.0.0/8"), ClassPrivate},
		{mustPrefix("100.64.0.0/10"), ClassSharedNAT},
		{mustPrefix("127.0.0.0/8"), ClassLoopback},
		{mustPrefix("169.254.0.0/16"), ClassLinkLocal},
		{mustPrefix("172.16.0.0/12"), ClassPrivate},
		{mustPrefix("192.0.0.0/24"), ClassReserved}, // IETF protocol assignments
		{mustPrefix("192.0.2.0/24"), ClassDocumentation},
		{mustPrefix("192.88.99.0/24"), ClassReserved}, // deprecated 6to4 relay anycast
		{mustPrefix("192.168.0.0/16"), ClassPrivate},
		{mustPrefix("198.18.0.0/15"), ClassReserved}, // benchmarking
		{mustPrefix("198.51.100.0/24"), ClassDocumentation},
		{mustPrefix("203.0.113.0/24"), ClassDocumentation},
		{mustPrefix("224.0.0.0/4"), ClassMulticast},
		{mustPrefix("255.255.255.255/32"), ClassBroadcast},
		{mustPrefix("240.0.0.0/4"), ClassReserved},
	}
}

func v6Ranges() []classRange {
	return []classRange{
		{mustPrefix("::/128"), ClassUnspecified},
		{mustPrefix("::1/128"), ClassLoopback},
		{mustPrefix("64:ff9b:1::/48"), ClassReserved}, // local-use NAT64: the embedding varies
		{mustPrefix("100::/64"), ClassReserved},       // discard-only
		{mustPrefix("2001:db8::/32"), ClassDocumentation},
		{mustPrefix("2001::/23"), ClassReserved}, // IETF protocol assignments, Teredo, ORCHID
		{mustPrefix("3fff::/20"), ClassDocumentation},
		{mustPrefix("5f00::/16"), ClassReserved}, // SRv6 SIDs
		{mustPrefix("fc00::/7"), ClassPrivate},
		{mustPrefix("fe80::/10"), ClassLinkLocal},
		{mustPrefix("fec0::/10"), ClassReserved}, // deprecated site-local
		{mustPrefix("ff00::/8"), ClassMulticast},
	}
}

func mustPrefix(s string) netip.Prefix { return netip.MustParsePrefix(s) }

// Classify says what kind of address a is. IPv6 forms that embed an IPv4
// address are judged by the embedded address, so that ::ffff:127.0.0.1,
// 64:ff9b::7f00:1 or 2002:7f00:1:: count as loopback.
func Classify(a netip.Addr) Classification {
	a = a.WithZone("")
	if a.Is4() {
		return Classification{Class: classify4(a)}
	}
	if v4, form, ok := embeddedV4(a); ok {
		c := Classification{Class: classify4(v4), Embedded: v4, Form: form}
		if form == "IPv4-compatible" && c.Class == ClassPublic {
			// Deprecated since 2006 and routed nowhere useful: refuse even
			// when the embedded address is public.
			c.Class = ClassReserved
		}
		return c
	}
	for _, r := range v6Ranges() {
		if r.prefix.Contains(a) {
			return Classification{Class: r.class}
		}
	}
	// Only 2000::/3 is allocated as global unicast.
	if !mustPrefix("2000::/3").Contains(a) {
		return Classification{Class: ClassReserved}
	}
	return Classification{Class: ClassPublic}
}

func classify4(a netip.Addr) AddrClass {
	for _, r := range v4Ranges() {
		if r.prefix.Contains(a) {
			return r.class
		}
	}
	return ClassPublic
}

// embeddedV4 extracts the IPv4 address carried by an IPv6 address, if the
// form is one that carries one.
func embeddedV4(a netip.Addr) (netip.Addr, string, bool) {
	b := a.As16()
	last4 := netip.AddrFrom4([4]byte{b[12], b[13], b[14], b[15]})
	switch {
	case a.Is4In6():
		return a.Unmap(), "IPv4-mapped", true
	case mustPrefix("::ffff:0:0:0/96").Contains(a):
		return last4, "IPv4-translated", true
	case mustPrefix("64:ff9b::/96").Contains(a):
		return last4, "NAT64", true
	case mustPrefix("2002::/16").Contains(a):
		return netip.AddrFrom4([4]byte{b[2], b[3], b[4], b[5]}), "6to4", true
	case mustPrefix("::/96").Contains(a) && a != netip.IPv6Unspecified() && a != netip.IPv6Loopback():
		return last4, "IPv4-compatible", true
	}
	return netip.Addr{}, "", false
}

// describe renders an address and its class for a refusal message.
func (c Classification) describe(a netip.Addr) string {
	if c.Embedded.IsValid() {
		return a.String() + " (" + c.Form + " " + c.Embedded.String() + ", " + c.Class.String() + ")"
	}
	return a.String() + " (" + c.Class.String() + ")"
}
