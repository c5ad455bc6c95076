package callbacks

import (
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
)

// The wire convention shared by every eryx callback service, whatever its
// language, and the catalogue that calls them. docs/callbacks.md is the
// normative description; these constants are its Go spelling.
const (
	// ProtocolVersion is announced in the service metadata (MetaProtocol).
	ProtocolVersion = "1"

	// DefaultPrefix is the platform's subject prefix; callbacks listen on
	// <prefix>.cb.<callback name>.
	DefaultPrefix = "eryx"

	// DefaultQueueGroup load-balances the instances of a service. It is the
	// queue group micro clients use by default, in Go and in Node.
	DefaultQueueGroup = "q"

	// MetaProtocol is service metadata: the convention's version.
	MetaProtocol = "eryx.protocol"
	// MetaCallback is endpoint metadata naming the callback as Python
	// sees it ("get_time", "http.get"). Only endpoints carrying it are
	// callbacks: the catalogue never exposes other micro endpoints to
	// sandboxed code.
	MetaCallback = "eryx.callback"
	// MetaDescription is endpoint metadata: the callback's description.
	MetaDescription = "eryx.description"
	// MetaSchema is endpoint metadata: the JSON Schema of the callback's
	// keyword arguments, as a JSON document in a string.
	MetaSchema = "eryx.schema"

	// MetaTenants is service metadata: the comma-separated tenants whose
	// jobs may call the service's callbacks. Absent, every tenant may; the
	// worker enforces it, and hides the callbacks from other tenants.
	MetaTenants = "eryx.tenants"

	// HeaderTenant and HeaderJob are set by the worker on every callback
	// request: the tenant and the id of the calling job. The guest cannot
	// set or change them.
	HeaderTenant = "Eryx-Tenant"
	HeaderJob    = "Eryx-Job"

	// HeaderTimeout carries the caller's remaining time budget in
	// milliseconds, so a service can stop working on a request nobody
	// waits for. Relative rather than absolute to be immune to clock skew.
	HeaderTimeout = "Eryx-Timeout-Ms"
	// HeaderErrorType duplicates the error body's type for clients that
	// only look at headers.
	HeaderErrorType = "Eryx-Error-Type"

	// Micro's error headers (same values as micro.ErrorHeader and
	// micro.ErrorCodeHeader), repeated here so that the catalogue's
	// decoding does not depend on the micro package.
	HeaderServiceError     = "Nats-Service-Error"
	HeaderServiceErrorCode = "Nats-Service-Error-Code"
)

// Error codes of error replies, in the spirit of HTTP status codes. The
// catalogue maps replies by their body's type, not by code: codes are for
// humans and for micro's STATS.
const (
	// CodeCallbackError: the handler returned an error.
	CodeCallbackError = "400"
	// CodeInternal: the handler panicked or its result was not JSON.
	CodeInternal = "500"
	// CodeUnavailable: the service is stopping or overloaded.
	CodeUnavailable = "503"
)

// Error types the SDK itself reports.
const (
	// TypeRuntimeError is the type of a plain Go error returned by a handler.
	TypeRuntimeError = "RuntimeError"
	// TypeTypeError is the type of arguments that do not decode (Typed).
	TypeTypeError = "TypeError"
	// TypeTimeoutError is the type of a handler error that is an expired
	// context (context.DeadlineExceeded).
	TypeTimeoutError = "TimeoutError"
	// TypeInternalError is the type of a panic or an unencodable result.
	TypeInternalError = "InternalError"
	// TypeServiceError is the type the catalogue gives an error reply
	// without a typed body (a micro service not following the convention).
	TypeServiceError = "ServiceError"
)

// nameRE is a dotted Python identifier: each part becomes a subject token
// and an attribute in Python, so both rule sets must accept it.
var nameRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$`)

// prefixRE is one or more plain subject tokens (no wildcards, no spaces).
var prefixRE = regexp.MustCompile(`^[A-Za-z0-9_\-]+(\.[A-Za-z0-9_\-]+)*$`)

// ValidName reports whether name can be a callback name: a Python
// identifier, optionally dotted into namespaces ("http.get").
func ValidName(name string) bool { return nameRE.MatchString(name) }

// ValidPrefix reports whether prefix can be a subject prefix.
func ValidPrefix(prefix string) bool { return prefixRE.MatchString(prefix) }

// SubjectPrefix returns the subject under which all callbacks of the
// platform with this prefix listen: "<prefix>.cb.".
func SubjectPrefix(prefix string) string {
	if prefix == "" {
		prefix = DefaultPrefix
	}
	return prefix + ".cb."
}

// Subject returns the subject of callback name under prefix
// ("eryx.cb.http.get").
func Subject(prefix, name string) string { return SubjectPrefix(prefix) + name }

// EndpointName maps a callback name to a micro endpoint name, which allows
// no dots: dots become dashes, which a Python identifier never contains, so
// the mapping is reversible (CallbackName).
func EndpointName(name string) string { return strings.ReplaceAll(name, ".", "-") }

// CallbackName is the inverse of EndpointName.
func CallbackName(endpoint string) string { return strings.ReplaceAll(endpoint, "-", ".") }

// ErrorBody is the JSON body of an error reply.
type ErrorBody struct {
	Type    string `json:"type"`
	Message string `json:"message"`
}

// DecodeError extracts the typed error of an error reply: the body's
// {"type","message"} when it has one, else the Eryx-Error-Type header and
// the micro description, else TypeServiceError with the code and
// description. ok is false when the reply is not an error.
func DecodeError(header map[string][]string, body []byte) (e ErrorBody, ok bool) {
	first := func(k string) string {
		if v := header[k]; len(v) > 0 {
			return v[0]
		}
		return ""
	}
	desc, code := first(HeaderServiceError), first(HeaderServiceErrorCode)
	if desc == "" && code == "" {
		return ErrorBody{}, false
	}
	if len(body) > 0 && json.Unmarshal(body, &e) == nil && e.Type != "" {
		if e.Message == "" {
			e.Message = desc
		}
		return e, true
	}
	if t := first(HeaderErrorType); t != "" {
		return ErrorBody{Type: t, Message: desc}, true
	}
	msg := desc
	if code != "" {
		msg = fmt.Sprintf("%s (code %s)", desc, code)
	}
	return ErrorBody{Type: TypeServiceError, Message: msg}, true
}
