package netgate

import (
	"errors"
	"strconv"
)

// Kinds of refusal; a *RefusalError wraps one of them, so callers branch
// with errors.Is.
var (
	// ErrDisabled: the policy allows no hosts at all.
	ErrDisabled = errors.New("networking is disabled")
	// ErrNotAllowed: the host or port is not in the allow-list.
	ErrNotAllowed = errors.New("not in the allow-list")
	// ErrBlockedAddress: the address (literal or resolved) is in a blocked range.
	ErrBlockedAddress = errors.New("blocked address")
	// ErrLimit: a per-execution cap (connections, bytes, lookups) is spent.
	ErrLimit = errors.New("network limit reached")
	// ErrInvalidPolicy: a policy, request or environment setting is malformed.
	ErrInvalidPolicy = errors.New("invalid network policy")
)

// RefusalError is a connection or transfer the policy refused. Its message
// is what Python sees, prefixed with "eryx network policy: ".
type RefusalError struct {
	// Host is what the code asked for (a name or an address).
	Host string
	// Reason says why, in words meant for the person reading the traceback.
	Reason string
	// Kind is ErrDisabled, ErrNotAllowed, ErrBlockedAddress or ErrLimit.
	Kind error
}

// Refusal kinds as short words, for OnRefusal and metric labels.
const (
	KindDisabled       = "disabled"
	KindNotAllowed     = "not_allowed"
	KindBlockedAddress = "blocked_address"
	KindLimit          = "limit"
)

// KindName is the refusal's kind as a short word (KindNotAllowed, ...).
func (e *RefusalError) KindName() string {
	switch {
	case errors.Is(e.Kind, ErrDisabled):
		return KindDisabled
	case errors.Is(e.Kind, ErrBlockedAddress):
		return KindBlockedAddress
	case errors.Is(e.Kind, ErrLimit):
		return KindLimit
	}
	return KindNotAllowed
}

func (e *RefusalError) Error() string { return "eryx network policy: " + e.Reason }

// Unwrap lets errors.Is match the Kind.
func (e *RefusalError) Unwrap() error { return e.Kind }

func refuse(kind error, host, reason string) *RefusalError {
	return &RefusalError{Host: host, Reason: reason, Kind: kind}
}

// quote renders untrusted text for a message: plain host-like text keeps
// the single quotes a Python reader expects, anything odd is escaped.
func quote(s string) string {
	const max = 255
	if len(s) > max {
		s = s[:max] + "..."
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x21 || c > 0x7e || c == '\'' || c == '\\' || c == '"' {
			return strconv.Quote(s)
		}
	}
	return "'" + s + "'"
}
