package netgate

import (
	"errors"
	"net/netip"
	"testing"
)

func TestClassify(t *testing.T) {
	tests := []struct {
		addr string
		want AddrClass
	}{
		// IPv4
		{"8.8.8.8", ClassPublic},
		{"93.184.216.34", ClassPublic},
		{"0.0.0.0", ClassUnspecified},
		{"0.1.2.3", ClassReserved},
		{"10.0.0.1", ClassPrivate},
		{"10.255.255.255", ClassPrivate},
		{"100.64.0.1", ClassSharedNAT},
		{"100.127.255.254", ClassSharedNAT},
		{"100.128.0.1", ClassPublic},
		{"127.0.0.1", ClassLoopback},
		{"127.255.255.254", ClassLoopback},
		{"169.254.169.254", ClassLinkLocal}, // cloud metadata
		{"169.254.0.1", ClassLinkLocal},
		{"172.16.0.1", ClassPrivate},
		{"172.31.255.255", ClassPrivate},
		{"172.32.0.1", ClassPublic},
		{"192.0.0.8", ClassReserved},
		{"192.0.2.1", ClassDocumentation},
		{"192.88.99.1", ClassReserved},
		{"192.168.1.1", ClassPrivate},
		{"198.18.0.1", ClassReserved},
		{"198.51.100.1", ClassDocumentation},
		{"203.0.113.1", ClassDocumentation},
		{"224.0.0.1", ClassMulticast},
		{"239.255.255.250", ClassMulticast},
		{"240.0.0.1", ClassReserved},
		{"255.255.255.255", ClassBroadcast},
		// IPv6
		{"2606:4700::1111", ClassPublic},
		{"::", ClassUnspecified},
		{"::1", ClassLoopback},
		{"fc00::1", ClassPrivate},
		{"fd12:3456::1", ClassPrivate},
		{"fe80::1", ClassLinkLocal},
		{"febf::1", ClassLinkLocal},
		{"fec0::1", ClassReserved},
		{"ff02::1", ClassMulticast},
		{"2001:db8::1", ClassDocumentation},
		{"3fff::1", ClassDocumentation},
		{"2001::1", ClassReserved}, // Teredo
		{"2001:2::1", ClassReserved},
		{"100::1", ClassReserved},
		{"4000::1", ClassReserved}, // outside 2000::/3
		{"64:ff9b:1::1", ClassReserved},
		// IPv6 forms embedding IPv4: judged by the IPv4 address
		{"::ffff:127.0.0.1", ClassLoopback},
		{"::ffff:169.254.169.254", ClassLinkLocal},
		{"::ffff:10.1.2.3", ClassPrivate},
		{"::ffff:8.8.8.8", ClassPublic},
		{"::ffff:0:127.0.0.1", ClassLoopback}, // IPv4-translated
		{"::127.0.0.1", ClassLoopback},        // IPv4-compatible
		{"::8.8.8.8", ClassReserved},          // IPv4-compatible, deprecated even when public
		{"64:ff9b::7f00:1", ClassLoopback},    // NAT64
		{"64:ff9b::a9fe:a9fe", ClassLinkLocal},
		{"64:ff9b::808:808", ClassPublic},
		{"2002:7f00:1::", ClassLoopback}, // 6to4
		{"2002:c0a8:101::1", ClassPrivate},
		{"2002:808:808::1", ClassPublic},
		{"fe80::1%eth0", ClassLinkLocal},
	}
	for _, tt := range tests {
		a := netip.MustParseAddr(tt.addr)
		if got := Classify(a).Class; got != tt.want {
			t.Errorf("Classify(%s) = %s, want %s", tt.addr, got, tt.want)
		}
	}
}

func TestCheckAddrOptIns(t *testing.T) {
	tests := []struct {
		addr              string
		loopback, private bool
		ok                bool
	}{
		{"8.8.8.8", false, false, true},
		{"127.0.0.1", false, false, false},
		{"127.0.0.1", true, false, true},
		{"::1", true, false, true},
		{"::ffff:127.0.0.1", true, false, true},
		{"10.0.0.1", true, false, false},
		{"10.0.0.1", false, true, true},
		{"100.64.0.1", false, true, true},
		{"fd00::1", false, true, true},
		{"169.254.169.254", true, true, false}, // never, whatever the opt-ins
		{"fe80::1", true, true, false},
		{"0.0.0.0", true, true, false},
		{"224.0.0.1", true, true, false},
		{"255.255.255.255", true, true, false},
		{"192.0.2.1", true, true, false},
	}
	for _, tt := range tests {
		p := Policy{AllowLoopback: tt.loopback, AllowPrivate: tt.private}
		err := p.CheckAddr(netip.MustParseAddr(tt.addr))
		if (err == nil) != tt.ok {
			t.Errorf("CheckAddr(%s) loopback=%v private=%v: %v, want ok=%v", tt.addr, tt.loopback, tt.private, err, tt.ok)
		}
		if err != nil && !errors.Is(err, ErrBlockedAddress) {
			t.Errorf("CheckAddr(%s): %v is not ErrBlockedAddress", tt.addr, err)
		}
	}
	err := Policy{}.CheckAddr(netip.MustParseAddr("::ffff:127.0.0.1"))
	if err == nil || err.Error() != "eryx network policy: address ::ffff:127.0.0.1 (IPv4-mapped 127.0.0.1, loopback) is not reachable from the sandbox, refused" {
		t.Errorf("message: %v", err)
	}
}
