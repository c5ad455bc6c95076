package netgate

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// Environment variables of the worker's network policy (docs/network.md).
const (
	EnvAllowHosts     = "ERYX_NET_ALLOW_HOSTS"
	EnvAllowPorts     = "ERYX_NET_ALLOW_PORTS"
	EnvMaxConnections = "ERYX_NET_MAX_CONNECTIONS"
	EnvConnectTimeout = "ERYX_NET_CONNECT_TIMEOUT"
	EnvIOTimeout      = "ERYX_NET_IO_TIMEOUT"
	EnvMaxBytesIn     = "ERYX_NET_MAX_BYTES_IN"
	EnvMaxBytesOut    = "ERYX_NET_MAX_BYTES_OUT"
	EnvAllowLoopback  = "ERYX_NET_ALLOW_LOOPBACK"
	EnvAllowPrivate   = "ERYX_NET_ALLOW_PRIVATE"
	EnvExtraCAFile    = "ERYX_NET_EXTRA_CA_FILE"
)

// PolicyFromEnv builds a policy from environment variables read through
// getenv (os.Getenv in the worker; a map in tests). Unset variables keep
// the zero Policy's meaning, so an empty environment means no network.
func PolicyFromEnv(getenv func(string) string) (Policy, error) {
	var p Policy
	var err error
	get := func(k string) string { return strings.TrimSpace(getenv(k)) }
	wrap := func(k string, e error) error { return fmt.Errorf("%s: %w", k, e) }

	if p.AllowHosts, err = ParseHostList(get(EnvAllowHosts)); err != nil {
		return Policy{}, wrap(EnvAllowHosts, err)
	}
	if p.AllowPorts, err = ParsePortList(get(EnvAllowPorts)); err != nil {
		return Policy{}, wrap(EnvAllowPorts, err)
	}
	if v := get(EnvMaxConnections); v != "" {
		if p.MaxConnections, err = strconv.Atoi(v); err != nil || p.MaxConnections < 0 {
			return Policy{}, wrap(EnvMaxConnections, fmt.Errorf("%w: %q is not a count", ErrInvalidPolicy, v))
		}
	}
	for _, d := range []struct {
		key string
		dst *time.Duration
	}{{EnvConnectTimeout, &p.ConnectTimeout}, {EnvIOTimeout, &p.IOTimeout}} {
		if v := get(d.key); v != "" {
			if *d.dst, err = time.ParseDuration(v); err != nil || *d.dst < 0 {
				return Policy{}, wrap(d.key, fmt.Errorf("%w: %q is not a duration such as 10s", ErrInvalidPolicy, v))
			}
		}
	}
	for _, b := range []struct {
		key string
		dst *int64
	}{{EnvMaxBytesIn, &p.MaxBytesIn}, {EnvMaxBytesOut, &p.MaxBytesOut}} {
		if v := get(b.key); v != "" {
			if *b.dst, err = ParseByteSize(v); err != nil {
				return Policy{}, wrap(b.key, err)
			}
		}
	}
	for _, f := range []struct {
		key string
		dst *bool
	}{{EnvAllowLoopback, &p.AllowLoopback}, {EnvAllowPrivate, &p.AllowPrivate}} {
		if v := get(f.key); v != "" {
			if *f.dst, err = strconv.ParseBool(v); err != nil {
				return Policy{}, wrap(f.key, fmt.Errorf("%w: %q is not a boolean", ErrInvalidPolicy, v))
			}
		}
	}
	if path := get(EnvExtraCAFile); path != "" {
		if p.ExtraCACerts, err = os.ReadFile(path); err != nil {
			return Policy{}, wrap(EnvExtraCAFile, err)
		}
	}
	if err := p.Validate(); err != nil {
		return Policy{}, err
	}
	return p, nil
}

// ParseByteSize parses a byte count: "1048576", "512KiB", "64MiB", "1GiB"
// (also KB/MB/GB, read as the same powers of two).
func ParseByteSize(s string) (int64, error) {
	v := strings.TrimSpace(s)
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"KB", 1 << 10}, {"MB", 1 << 20}, {"GB", 1 << 30}, {"B", 1}} {
		if strings.HasSuffix(v, u.suffix) {
			v, mult = strings.TrimSpace(strings.TrimSuffix(v, u.suffix)), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 || n > (1<<62)/mult {
		return 0, fmt.Errorf("%w: %q is not a byte size such as 64MiB", ErrInvalidPolicy, s)
	}
	return n * mult, nil
}
