package catalogue

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/nats-io/nats.go/micro"
)

func TestCompareVersions(t *testing.T) {
	tests := []struct {
		a, b string
		want int
	}{
		{"1.0.0", "1.0.0", 0},
		{"1.10.0", "1.9.0", 1},
		{"2.0.0", "10.0.0", -1},
		{"1.0.0", "1.0.0-rc.1", 1},
		{"1.0.0-rc.2", "1.0.0-rc.1", 1},
		{"1.0.0+build.5", "1.0.0", 0},
	}
	for _, tc := range tests {
		if got := compareVersions(tc.a, tc.b); got != tc.want {
			t.Errorf("compare(%s, %s) = %d, want %d", tc.a, tc.b, got, tc.want)
		}
	}
}

func TestBuildPicksOneWinnerPerName(t *testing.T) {
	ep := func(name, subject, desc string) micro.EndpointInfo {
		return micro.EndpointInfo{Name: name, Subject: subject, Metadata: map[string]string{
			"eryx.callback": name, "eryx.description": desc}}
	}
	info := func(svc, version string, eps ...micro.EndpointInfo) micro.Info {
		return micro.Info{ServiceIdentity: micro.ServiceIdentity{Name: svc, Version: version}, Endpoints: eps}
	}
	infos := []micro.Info{
		info("a", "1.0.0", ep("f", "eryx.cb.f", "old")),
		info("a", "1.1.0", ep("f", "eryx.cb.f", "new")), // rolling upgrade
		info("b", "0.9.0", ep("f", "eryx.cb.b.f", "other")),
		info("c", "1.0.0", ep("g", "eryx.cb.g", "")),
		info("c", "1.0.0", micro.EndpointInfo{Name: "bad", Subject: "eryx.cb.bad", Metadata: map[string]string{"eryx.callback": "bad-name"}}),
		info("c", "1.0.0", micro.EndpointInfo{Name: "schema", Subject: "eryx.cb.schema", Metadata: map[string]string{"eryx.callback": "schema", "eryx.schema": "{"}}),
		info("c", "1.0.0", micro.EndpointInfo{Name: "wild", Subject: "eryx.cb.*", Metadata: map[string]string{"eryx.callback": "wild"}}),
		info("d", "1.0.0", micro.EndpointInfo{Name: "plain", Subject: "eryx.cb.plain"}), // not a callback
	}
	got, warnings, _ := build(infos, "eryx", limits{})
	if len(got) != 2 {
		t.Fatalf("entries = %v", got)
	}
	if f := got["f"]; f.Description != "new" || f.Instances != 2 || f.Subject != "eryx.cb.f" {
		t.Fatalf("f = %+v", f)
	}
	if len(warnings) != 4 { // conflict, bad name, bad schema, wildcard subject
		t.Fatalf("warnings = %q", warnings)
	}
	// Other prefixes see nothing of eryx's.
	if got, _, _ := build(infos, "acme", limits{}); len(got) != 0 {
		t.Fatalf("acme sees %v", got)
	}
}

func TestBuildBounds(t *testing.T) {
	svc := func(name string, n int, desc string) micro.Info {
		info := micro.Info{ServiceIdentity: micro.ServiceIdentity{Name: name, ID: name + "-1", Version: "1.0.0"}}
		for i := range n {
			cb := fmt.Sprintf("%s.f%04d", name, i)
			info.Endpoints = append(info.Endpoints, micro.EndpointInfo{Name: cb, Subject: "eryx.cb." + cb,
				Metadata: map[string]string{"eryx.callback": cb, "eryx.description": desc}})
		}
		return info
	}
	many := func() []micro.Info {
		var out []micro.Info
		for i := range 20 {
			out = append(out, svc(fmt.Sprintf("s%02d", i), 4000, "x"))
		}
		return out
	}
	tests := []struct {
		name    string
		infos   []micro.Info
		lim     limits
		want    int
		ignored map[string]int
	}{
		{"per service", []micro.Info{svc("a", 300, ""), svc("b", 10, "")}, limits{perService: 256, total: 1024},
			266, map[string]int{IgnoredPerService: 44}},
		{"total", many(), limits{perService: 256, total: 1024},
			// Once the catalogue is full, later services count as "total".
			1024, map[string]int{IgnoredPerService: 4 * (4000 - 256), IgnoredTotal: 16 * 4000}},
		{"spec bytes", []micro.Info{svc("a", 3, strings.Repeat("d", 100)), svc("b", 2, "")}, limits{specBytes: 50},
			2, map[string]int{IgnoredSpecBytes: 3}},
		{"service refused", []micro.Info{svc("evil", 5, ""), svc("good", 2, "")},
			limits{allow: func(service, _ string) bool { return service == "good" }},
			2, map[string]int{IgnoredService: 5}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, _, ignored := build(tc.infos, "eryx", tc.lim)
			if len(got) != tc.want {
				t.Fatalf("%d entries, want %d", len(got), tc.want)
			}
			if fmt.Sprint(ignored) != fmt.Sprint(tc.ignored) {
				t.Fatalf("ignored %v, want %v", ignored, tc.ignored)
			}
		})
	}
	// The same callbacks survive the cut whatever the replies' order.
	a, _, _ := build(many(), "eryx", limits{perService: 256, total: 1024})
	rev := many()
	slices.Reverse(rev)
	b, _, _ := build(rev, "eryx", limits{perService: 256, total: 1024})
	if !maps.EqualFunc(a, b, func(x, y *Entry) bool { return x.Subject == y.Subject }) {
		t.Fatal("the bounded catalogue depends on the order of the replies")
	}
}
