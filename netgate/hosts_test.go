package netgate

import (
	"errors"
	"slices"
	"testing"
)

func TestParseEntry(t *testing.T) {
	tests := []struct {
		in, want string // want "" means invalid
	}{
		{"api.example.com", "api.example.com"},
		{"API.Example.COM.", "api.example.com"},
		{"*.example.org", "*.example.org"},
		{"*.Example.org.:8443", "*.example.org:8443"},
		{"*", "*"},
		{"*:5432", "*:5432"},
		{"203.0.113.7", "203.0.113.7"},
		{"203.0.113.7:80", "203.0.113.7:80"},
		{"2001:db8::1", "2001:db8::1"},
		{"[2001:db8::1]", "2001:db8::1"},
		{"[2001:DB8::1]:443", "[2001:db8::1]:443"},
		{"::ffff:203.0.113.7", "203.0.113.7"},
		{"under_score.example.com", "under_score.example.com"},
		{"10.20.0.0/16", "10.20.0.0/16"},
		{"10.20.30.40/16:5432", "10.20.0.0/16:5432"},
		{"[fd00::/8]:5432", "[fd00::/8]:5432"},
		{"fd00::/8", "fd00::/8"},
		{"::ffff:10.0.0.0/104", "10.0.0.0/8"},
		{"10.0.0.0/33", ""},
		{"example.com/8", ""},
		{"", ""},
		{"*.", ""},
		{"a.*.example.com", ""},
		{"*example.com", ""},
		{"example.com:0", ""},
		{"example.com:65536", ""},
		{"example.com:", ""},
		{"example.com:http", ""},
		{"exa mple.com", ""},
		{"a..b", ""},
		{"127.1", ""},      // inet_aton shorthand, not a name
		{"2130706433", ""}, // ditto
		{"0x7f.1", ""},
		{"evil.0x7f000001", ""},
		{"[example.com]:80", ""},
		{"fe80::1%eth0", ""},
		{"bücher.example", ""}, // punycode only
	}
	for _, tt := range tests {
		e, err := parseEntry(tt.in)
		switch {
		case tt.want == "" && err == nil:
			t.Errorf("parseEntry(%q) = %q, want an error", tt.in, e)
		case tt.want == "" && !errors.Is(err, ErrInvalidPolicy):
			t.Errorf("parseEntry(%q): %v, want ErrInvalidPolicy", tt.in, err)
		case tt.want != "" && err != nil:
			t.Errorf("parseEntry(%q): %v", tt.in, err)
		case tt.want != "" && e.String() != tt.want:
			t.Errorf("parseEntry(%q) = %q, want %q", tt.in, e, tt.want)
		}
	}
}

func TestEntryMatches(t *testing.T) {
	tests := []struct {
		entry, host string
		want        bool
	}{
		{"api.example.com", "api.example.com", true},
		{"api.example.com", "API.EXAMPLE.COM.", true},
		{"api.example.com", "x.api.example.com", false},
		{"api.example.com", "example.com", false},
		{"*.example.org", "a.example.org", true},
		{"*.example.org", "a.b.example.org", true},
		{"*.example.org", "A.Example.Org.", true},
		{"*.example.org", "example.org", false}, // the apex is not a subdomain
		{"*.example.org", "evilexample.org", false},
		{"*.example.org", "example.org.evil.com", false},
		{"*.example.org", "203.0.113.7", false},
		{"*", "anything.example", true},
		{"*", "203.0.113.7", true},
		{"203.0.113.7", "203.0.113.7", true},
		{"203.0.113.7", "::ffff:203.0.113.7", true},
		{"203.0.113.7", "203.0.113.8", false},
		{"2001:db8::1", "[2001:DB8:0::1]", true},
		{"example.com", "203.0.113.7", false},
		{"10.20.0.0/16", "10.20.1.2", true},
		{"10.20.0.0/16", "::ffff:10.20.1.2", true},
		{"10.20.0.0/16", "10.21.0.1", false},
		{"10.20.0.0/16", "db.internal", false}, // names match name entries only
		{"fd00::/8", "fd12::1", true},
	}
	for _, tt := range tests {
		e, err := parseEntry(tt.entry)
		if err != nil {
			t.Fatal(err)
		}
		h, err := parseTarget(tt.host)
		if err != nil {
			t.Fatalf("parseTarget(%q): %v", tt.host, err)
		}
		if got := e.matches(h); got != tt.want {
			t.Errorf("%q matches %q = %v, want %v", tt.entry, tt.host, got, tt.want)
		}
	}
}

func TestParseLists(t *testing.T) {
	hosts, err := ParseHostList(" api.example.com, *.Example.org\tdb.internal:5432 ,,")
	if err != nil || !slices.Equal(hosts, []string{"api.example.com", "*.example.org", "db.internal:5432"}) {
		t.Errorf("ParseHostList = %q, %v", hosts, err)
	}
	if hosts, err := ParseHostList(""); err != nil || len(hosts) != 0 {
		t.Errorf("empty list = %q, %v", hosts, err)
	}
	if _, err := ParseHostList("ok.com, bad..com"); !errors.Is(err, ErrInvalidPolicy) {
		t.Errorf("bad entry: %v", err)
	}
	ports, err := ParsePortList("443, 80 8080")
	if err != nil || !slices.Equal(ports, []int{443, 80, 8080}) {
		t.Errorf("ParsePortList = %v, %v", ports, err)
	}
	if _, err := ParsePortList("443,0"); !errors.Is(err, ErrInvalidPolicy) {
		t.Errorf("port 0: %v", err)
	}
}
