package netgate

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"time"
)

// Request is a job's network request: it can only narrow the worker's
// policy (Policy.Narrow). It is the "network" object of a job, e.g.
//
//	{"allow": ["api.example.com", "*.cdn.example.org:8443"], "max_connections": 4}
type Request struct {
	// Allow lists allow-list entries, as in Policy.AllowHosts. nil keeps
	// the worker's list; an empty list asks for no network at all.
	Allow []string `json:"allow"`
	// AllowPorts restricts the ports; nil keeps the worker's.
	AllowPorts []int `json:"allow_ports"`
	// Limits lower the worker's; zero keeps the worker's value.
	MaxConnections   int   `json:"max_connections,omitempty"`
	ConnectTimeoutMS int64 `json:"connect_timeout_ms,omitempty"`
	IOTimeoutMS      int64 `json:"io_timeout_ms,omitempty"`
	MaxBytesIn       int64 `json:"max_bytes_in,omitempty"`
	MaxBytesOut      int64 `json:"max_bytes_out,omitempty"`
}

// maxRequestEntries bounds a request's lists, which come from untrusted jobs.
const maxRequestEntries = 256

// ParseRequest decodes and validates a job's network request. Unknown
// fields are errors, so that a misspelt limit is not silently ignored.
func ParseRequest(data []byte) (Request, error) {
	var r Request
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil {
		return Request{}, fmt.Errorf("%w: network request: %w", ErrInvalidPolicy, err)
	}
	return r, r.Validate()
}

// Validate reports the first malformed field, wrapping ErrInvalidPolicy.
func (r Request) Validate() error {
	if len(r.Allow) > maxRequestEntries || len(r.AllowPorts) > maxRequestEntries {
		return fmt.Errorf("%w: network request lists more than %d entries", ErrInvalidPolicy, maxRequestEntries)
	}
	for _, s := range r.Allow {
		if _, err := parseEntry(s); err != nil {
			return err
		}
	}
	for _, p := range r.AllowPorts {
		if p < 1 || p > 65535 {
			return fmt.Errorf("%w: port %d is not between 1 and 65535", ErrInvalidPolicy, p)
		}
	}
	if r.MaxConnections < 0 || r.ConnectTimeoutMS < 0 || r.IOTimeoutMS < 0 || r.MaxBytesIn < 0 || r.MaxBytesOut < 0 {
		return fmt.Errorf("%w: negative limit in network request", ErrInvalidPolicy)
	}
	return nil
}

// Narrow returns the policy a job runs under: the intersection of p (the
// worker's ceiling) and the job's request. Whatever the request says, the
// result allows nothing p does not: malformed entries and negative or
// larger limits are ignored rather than trusted. The result has every
// default made explicit.
func (p Policy) Narrow(r Request) Policy {
	ceil, err := p.compile()
	if err != nil {
		return Policy{} // a broken ceiling allows nothing
	}
	out := ceil.Policy // defaults applied
	if r.AllowPorts != nil {
		var ports []int
		for _, port := range r.AllowPorts {
			if slices.Contains(ceil.AllowPorts, port) {
				ports = append(ports, port)
			}
		}
		out.AllowPorts = sortedPorts(ports)
	}
	out.MaxConnections = narrowInt(out.MaxConnections, r.MaxConnections)
	out.ConnectTimeout = time.Duration(narrowInt(int64(out.ConnectTimeout), r.ConnectTimeoutMS*int64(time.Millisecond)))
	out.IOTimeout = time.Duration(narrowInt(int64(out.IOTimeout), r.IOTimeoutMS*int64(time.Millisecond)))
	out.MaxBytesIn = narrowInt(out.MaxBytesIn, r.MaxBytesIn)
	out.MaxBytesOut = narrowInt(out.MaxBytesOut, r.MaxBytesOut)

	// What the job asks for: its own entries, or the worker's (limited to
	// the requested ports) when it names none.
	var want []hostEntry
	if r.Allow == nil {
		for _, e := range ceil.entries {
			if e.port == 0 || r.AllowPorts == nil || slices.Contains(r.AllowPorts, e.port) {
				want = append(want, e)
			}
		}
	} else {
		for _, s := range r.Allow {
			if e, err := parseEntry(s); err == nil {
				want = append(want, e)
			}
		}
	}
	out.AllowHosts = nil
	for _, w := range want {
		for _, c := range ceil.entries {
			e, ok := intersectEntry(c, w, ceil.AllowPorts, out.AllowPorts)
			if ok && !slices.Contains(out.AllowHosts, e.String()) {
				out.AllowHosts = append(out.AllowHosts, e.String())
			}
		}
	}
	if len(out.AllowPorts) == 0 {
		// An empty AllowPorts would read as the defaults; entries that rely
		// on it reach nothing now, so drop them instead.
		out.AllowHosts = slices.DeleteFunc(out.AllowHosts, func(s string) bool {
			e, _ := parseEntry(s)
			return e.port == 0
		})
		out.AllowPorts = nil
	}
	return out
}

// intersectEntry is the part of entry w (the job's) within entry c (the
// ceiling's). cPorts are the ceiling's ports for entries without one,
// wPorts the narrowed ones.
func intersectEntry(c, w hostEntry, cPorts, wPorts []int) (hostEntry, bool) {
	var e hostEntry
	switch {
	case c.coversHost(w):
		e = w
	case w.coversHost(c):
		e = c
	default:
		return hostEntry{}, false
	}
	switch {
	case c.port == 0 && w.port == 0:
		e.port = 0 // the narrowed AllowPorts, a subset of the ceiling's
	case c.port != 0 && w.port != 0:
		if c.port != w.port {
			return hostEntry{}, false
		}
		e.port = c.port
	case c.port != 0: // the job relies on its ports
		if !slices.Contains(wPorts, c.port) {
			return hostEntry{}, false
		}
		e.port = c.port
	default: // the job names a port; the ceiling's list must hold it
		if !slices.Contains(cPorts, w.port) {
			return hostEntry{}, false
		}
		e.port = w.port
	}
	return e, true
}

// Covers reports whether everything entry allows (with the policy's ports
// when it names none) is allowed by p, so that a job asking for it is
// asking for no more than the worker offers.
func (p Policy) Covers(entry string) bool {
	ceil, err := p.compile()
	if err != nil {
		return false
	}
	w, err := parseEntry(entry)
	if err != nil {
		return false
	}
	for _, c := range ceil.entries {
		if e, ok := intersectEntry(c, w, ceil.AllowPorts, ceil.AllowPorts); ok && e.String() == w.String() {
			return true
		}
	}
	return false
}

func narrowInt[T int | int64](ceiling, req T) T {
	if req > 0 && req < ceiling {
		return req
	}
	return ceiling
}
