package netgate

import (
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"
)

func TestNarrow(t *testing.T) {
	ceiling := Policy{
		AllowHosts:     []string{"api.example.com", "*.example.org", "db.internal:5432"},
		AllowPorts:     []int{443, 8443},
		MaxConnections: 10,
		IOTimeout:      5 * time.Second,
		MaxBytesIn:     1000,
		AllowLoopback:  true,
	}
	tests := []struct {
		name      string
		req       Request
		wantHosts []string
		wantPorts []int
	}{
		{"zero request keeps the ceiling", Request{},
			[]string{"api.example.com", "*.example.org", "db.internal:5432"}, []int{443, 8443}},
		{"empty list means none", Request{Allow: []string{}}, nil, []int{443, 8443}},
		{"a subset", Request{Allow: []string{"api.example.com"}}, []string{"api.example.com"}, []int{443, 8443}},
		{"a subdomain of a wildcard", Request{Allow: []string{"cdn.example.org", "*.eu.example.org"}},
			[]string{"cdn.example.org", "*.eu.example.org"}, []int{443, 8443}},
		// "*" asks for the default ports, so db.internal:5432 is not in it.
		{"a wider wildcard is cut down", Request{Allow: []string{"*.com", "*"}},
			[]string{"api.example.com", "*.example.org"}, []int{443, 8443}},
		{"a wildcard with the entry's port", Request{Allow: []string{"*:5432"}},
			[]string{"db.internal:5432"}, []int{443, 8443}},
		{"hosts outside are dropped", Request{Allow: []string{"evil.com", "example.org", "evilexample.org", "10.0.0.1"}}, nil, []int{443, 8443}},
		{"ports narrow", Request{AllowPorts: []int{443, 22}},
			[]string{"api.example.com", "*.example.org"}, []int{443}},
		{"a port of the ceiling's list", Request{Allow: []string{"api.example.com:8443", "api.example.com:22"}},
			[]string{"api.example.com:8443"}, []int{443, 8443}},
		{"an entry's own port", Request{Allow: []string{"db.internal:5432", "db.internal:5433", "db.internal"}},
			[]string{"db.internal:5432"}, []int{443, 8443}},
		{"no ports left", Request{AllowPorts: []int{22}}, nil, nil},
		{"no ports left, explicit entry kept", Request{Allow: []string{"api.example.com:443"}, AllowPorts: []int{22}},
			[]string{"api.example.com:443"}, nil},
		{"malformed entries are ignored", Request{Allow: []string{"api.example.com", "bad..name", ""}},
			[]string{"api.example.com"}, []int{443, 8443}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := ceiling.Narrow(tt.req)
			if !slices.Equal(got.AllowHosts, tt.wantHosts) {
				t.Errorf("AllowHosts = %q, want %q", got.AllowHosts, tt.wantHosts)
			}
			if !slices.Equal(got.AllowPorts, tt.wantPorts) {
				t.Errorf("AllowPorts = %v, want %v", got.AllowPorts, tt.wantPorts)
			}
			if !got.AllowLoopback || got.AllowPrivate {
				t.Errorf("opt-ins changed: %+v", got)
			}
		})
	}
}

func TestNarrowLimits(t *testing.T) {
	ceiling := Policy{AllowHosts: []string{"a.com"}, MaxConnections: 10, IOTimeout: 5 * time.Second, MaxBytesOut: 100}
	tests := []struct {
		req      Request
		conns    int
		io       time.Duration
		bytesOut int64
		connect  time.Duration
	}{
		{Request{}, 10, 5 * time.Second, 100, DefaultConnectTimeout},
		{Request{MaxConnections: 3, IOTimeoutMS: 100, MaxBytesOut: 50, ConnectTimeoutMS: 1000}, 3, 100 * time.Millisecond, 50, time.Second},
		{Request{MaxConnections: 1000, IOTimeoutMS: 60000, MaxBytesOut: 1 << 40, ConnectTimeoutMS: 1 << 50}, 10, 5 * time.Second, 100, DefaultConnectTimeout},
		// Negative values would read as "the default" downstream: ignored.
		{Request{MaxConnections: -1, IOTimeoutMS: -1, MaxBytesOut: -1}, 10, 5 * time.Second, 100, DefaultConnectTimeout},
	}
	for _, tt := range tests {
		got := ceiling.Narrow(tt.req)
		if got.MaxConnections != tt.conns || got.IOTimeout != tt.io || got.MaxBytesOut != tt.bytesOut || got.ConnectTimeout != tt.connect {
			t.Errorf("Narrow(%+v) = conns %d io %v out %d connect %v", tt.req, got.MaxConnections, got.IOTimeout, got.MaxBytesOut, got.ConnectTimeout)
		}
		if got.MaxBytesIn != DefaultMaxBytesIn {
			t.Errorf("MaxBytesIn %d", got.MaxBytesIn)
		}
	}
}

// Whatever a job asks, every (host, port) the narrowed policy allows is
// allowed by the ceiling: checked over a grid of requests and probes.
func TestNarrowNeverWidens(t *testing.T) {
	ceilings := []Policy{
		{AllowHosts: []string{"api.example.com", "*.example.org", "db.internal:5432"}, AllowPorts: []int{443, 8443}},
		{AllowHosts: []string{"*.example.org:443"}},
		{AllowHosts: []string{"203.0.113.7", "api.example.com:80"}},
		{AllowHosts: []string{"*"}, AllowPorts: []int{443}},
		{AllowHosts: []string{"10.0.0.0/8:5432", "203.0.113.0/25"}, AllowPrivate: true},
		{},
	}
	entries := []string{"10.0.0.0/8", "10.1.0.0/16:443", "203.0.113.0/24", "*", "*:22", "*:443", "api.example.com", "api.example.com:22", "*.example.org", "*.a.example.org:8443",
		"a.example.org", "example.org", "db.internal", "db.internal:5432", "203.0.113.7", "203.0.113.7:443", "evil.com"}
	hosts := []string{"api.example.com", "a.example.org", "b.a.example.org", "example.org", "db.internal", "evil.com",
		"203.0.113.7", "203.0.113.8", "203.0.113.200", "10.1.2.3", "10.2.0.1"}
	ports := []int{22, 80, 443, 5432, 8443}
	var requests []Request
	for i := range entries {
		for j := i; j < len(entries); j++ {
			requests = append(requests, Request{Allow: []string{entries[i], entries[j]}})
			requests = append(requests, Request{Allow: []string{entries[i], entries[j]}, AllowPorts: []int{443, 22}})
		}
	}
	requests = append(requests, Request{}, Request{AllowPorts: []int{5432, 80}})
	for ci, ceiling := range ceilings {
		for _, req := range requests {
			narrowed := ceiling.Narrow(req)
			for _, h := range hosts {
				for _, p := range ports {
					if narrowed.CheckHost(h, p) == nil && ceiling.CheckHost(h, p) != nil {
						t.Errorf("ceiling %d, request %+v: narrowed %q allows %s:%d, the ceiling does not",
							ci, req, narrowed.AllowHosts, h, p)
					}
				}
			}
		}
	}
}

func TestCovers(t *testing.T) {
	p := Policy{AllowHosts: []string{"*.example.org", "api.example.com:8443", "*"}, AllowPorts: []int{443}}
	q := Policy{AllowHosts: []string{"*.example.org", "api.example.com:8443"}, AllowPorts: []int{443}}
	for _, tt := range []struct {
		p     Policy
		entry string
		want  bool
	}{
		{q, "a.example.org", true},
		{q, "*.a.example.org", true},
		{q, "a.example.org:443", true},
		{q, "a.example.org:80", false},
		{q, "example.org", false},
		{q, "api.example.com:8443", true},
		{q, "api.example.com", false},
		{q, "*", false},
		{p, "anything.com", true},
		{Policy{AllowHosts: []string{"10.0.0.0/8"}}, "10.1.0.0/16", true},
		{Policy{AllowHosts: []string{"10.0.0.0/8"}}, "10.1.2.3", true},
		{Policy{AllowHosts: []string{"10.1.0.0/16"}}, "10.0.0.0/8", false},
		{p, "bad..name", false},
	} {
		if got := tt.p.Covers(tt.entry); got != tt.want {
			t.Errorf("%q covers %q = %v, want %v", tt.p.AllowHosts, tt.entry, got, tt.want)
		}
	}
}

func TestParseRequest(t *testing.T) {
	r, err := ParseRequest([]byte(`{"allow":["api.example.com","*.cdn.example.org:8443"],"max_connections":4,"io_timeout_ms":2000}`))
	if err != nil || len(r.Allow) != 2 || r.MaxConnections != 4 || r.IOTimeoutMS != 2000 || r.AllowPorts != nil {
		t.Errorf("ParseRequest = %+v, %v", r, err)
	}
	if r, err := ParseRequest([]byte(`{"allow":[]}`)); err != nil || r.Allow == nil || len(r.Allow) != 0 {
		t.Errorf("an empty allow list must stay non-nil (no network): %+v %v", r, err)
	}
	for _, bad := range []string{
		`{"allow":["a..b"]}`, `{"allow_ports":[0]}`, `{"max_connections":-1}`, `{"max_conections":1}`, `[1]`,
		fmt.Sprintf(`{"allow":[%s"x.com"]}`, stringsRepeat(`"x.com",`, maxRequestEntries)),
	} {
		if _, err := ParseRequest([]byte(bad)); !errors.Is(err, ErrInvalidPolicy) {
			t.Errorf("ParseRequest(%.40s): %v, want ErrInvalidPolicy", bad, err)
		}
	}
}

func stringsRepeat(s string, n int) string {
	out := ""
	for range n {
		out += s
	}
	return out
}

func TestCheckHostMessages(t *testing.T) {
	p := Policy{AllowHosts: []string{"api.example.com", "db.internal:5432"}}
	tests := []struct {
		host string
		port int
		kind error
		msg  string
	}{
		{"api.example.com", 443, nil, ""},
		{"API.example.com.", 80, nil, ""},
		{"db.internal", 5432, nil, ""},
		{"api.example.com", 22, ErrNotAllowed, "eryx network policy: port 22 is not allowed for host 'api.example.com' (allowed: 80, 443)"},
		{"db.internal", 443, ErrNotAllowed, "eryx network policy: port 443 is not allowed for host 'db.internal' (allowed: 5432)"},
		{"x.com", 443, ErrNotAllowed, "eryx network policy: host 'x.com' is not in the allow-list"},
		{"x'y.com", 443, ErrNotAllowed, `eryx network policy: invalid host name "x'y.com"`},
	}
	for _, tt := range tests {
		err := p.CheckHost(tt.host, tt.port)
		if tt.kind == nil {
			if err != nil {
				t.Errorf("CheckHost(%s, %d): %v", tt.host, tt.port, err)
			}
			continue
		}
		var r *RefusalError
		if !errors.Is(err, tt.kind) || !errors.As(err, &r) || err.Error() != tt.msg {
			t.Errorf("CheckHost(%s, %d) = %v, want %q", tt.host, tt.port, err, tt.msg)
		}
	}
	err := Policy{}.CheckHost("api.example.com", 443)
	if !errors.Is(err, ErrDisabled) {
		t.Errorf("zero policy: %v, want ErrDisabled", err)
	}
}
