package netgate

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

func TestPolicyFromEnv(t *testing.T) {
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, []byte(testCAPEM(t)), 0o600); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{
		EnvAllowHosts:     "api.example.com, *.example.org",
		EnvAllowPorts:     "443,8443",
		EnvMaxConnections: "8",
		EnvConnectTimeout: "3s",
		EnvIOTimeout:      "1m",
		EnvMaxBytesIn:     "64MiB",
		EnvMaxBytesOut:    "1024",
		EnvAllowLoopback:  "true",
		EnvAllowPrivate:   "0",
		EnvExtraCAFile:    ca,
	}
	p, err := PolicyFromEnv(func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(p.AllowHosts, []string{"api.example.com", "*.example.org"}) || !slices.Equal(p.AllowPorts, []int{443, 8443}) ||
		p.MaxConnections != 8 || p.ConnectTimeout != 3*time.Second || p.IOTimeout != time.Minute ||
		p.MaxBytesIn != 64<<20 || p.MaxBytesOut != 1024 || !p.AllowLoopback || p.AllowPrivate || len(p.ExtraCACerts) == 0 {
		t.Errorf("policy %+v", p)
	}

	empty, err := PolicyFromEnv(func(string) string { return "" })
	if err != nil || empty.Enabled() {
		t.Errorf("an empty environment must mean no network: %+v, %v", empty, err)
	}

	for k, v := range map[string]string{
		EnvAllowHosts: "a..b", EnvAllowPorts: "http", EnvMaxConnections: "-1", EnvIOTimeout: "5",
		EnvMaxBytesIn: "lots", EnvAllowLoopback: "yes please",
	} {
		_, err := PolicyFromEnv(func(key string) string {
			if key == k {
				return v
			}
			return ""
		})
		if !errors.Is(err, ErrInvalidPolicy) {
			t.Errorf("%s=%q: %v, want ErrInvalidPolicy", k, v, err)
		}
	}
	if _, err := PolicyFromEnv(func(k string) string {
		return map[string]string{EnvExtraCAFile: filepath.Join(t.TempDir(), "missing.pem")}[k]
	}); err == nil {
		t.Error("a missing CA file must be an error")
	}
}

func TestParseByteSize(t *testing.T) {
	for in, want := range map[string]int64{"0": 0, "1024": 1024, "1KiB": 1024, "2 MiB": 2 << 20, "1GiB": 1 << 30, "3MB": 3 << 20, "7B": 7} {
		if got, err := ParseByteSize(in); err != nil || got != want {
			t.Errorf("ParseByteSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "-1", "1.5MiB", "MiB", "1TiB", "99999999999GiB"} {
		if _, err := ParseByteSize(bad); err == nil {
			t.Errorf("ParseByteSize(%q) succeeded", bad)
		}
	}
}
