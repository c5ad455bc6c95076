package catalogue

import (
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
	got, warnings := build(infos, "eryx")
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
	if got, _ := build(infos, "acme"); len(got) != 0 {
		t.Fatalf("acme sees %v", got)
	}
}
