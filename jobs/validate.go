package jobs

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"
)

// RejectCode classifies why a job was rejected. It is part of the protocol:
// clients branch on it.
type RejectCode string

const (
	CodeMalformed          RejectCode = "malformed"           // not a JSON job document
	CodeTooLarge           RejectCode = "too_large"           // message or code above the worker's limit
	CodeUnsupportedVersion RejectCode = "unsupported_version" // "v" newer than the worker speaks
	CodeInvalidID          RejectCode = "invalid_id"          // id or session is not a subject token
	CodeInvalidLimits      RejectCode = "invalid_limits"      // timeout or memory out of range
	CodeInvalidCode        RejectCode = "invalid_code"        // code the runtime cannot take (NUL byte)
	CodeUnknownPackage     RejectCode = "unknown_package"     // a package not in the packages bucket
	CodeBadPackage         RejectCode = "bad_package"         // a package the runtime cannot use (native code, corrupt)
	CodeNotAllowed         RejectCode = "not_allowed"         // network or callback request beyond the policy
	CodeUnsupported        RejectCode = "unsupported"         // a feature this worker does not offer
	CodeDeadLetter         RejectCode = "dead_letter"         // deliveries exhausted (it kept killing workers)
	CodeInvalidTenant      RejectCode = "invalid_tenant"      // the job's tenant field names another tenant than its subject
	CodePackageMismatch    RejectCode = "package_mismatch"    // a pinned package's content has another hash
	CodeSessionTampered    RejectCode = "session_tampered"    // the session's snapshot fails its integrity check
	CodeUnknownSecret      RejectCode = "unknown_secret"      // a secret the worker does not hold
	CodeQuotaExceeded      RejectCode = "quota_exceeded"      // a tenant quota (Result.Limit names it; retry after RetryAfterMS)
	CodeFileNotFound       RejectCode = "file_not_found"      // an input file's object is not in the files bucket
	CodeInvalidPath        RejectCode = "invalid_path"        // an input path or object name that is not a clean relative path
	CodeFileMismatch       RejectCode = "file_mismatch"       // a pinned input file's content has another hash
)

// RejectError is why a job is rejected. Compare with errors.Is against the
// Err* values, which match on Code alone.
type RejectError struct {
	Code   RejectCode
	Reason string
	// Limit and RetryAfter are set for quota_exceeded: the quota, and
	// how long until it would admit the job.
	Limit      string
	RetryAfter time.Duration
}

func (e *RejectError) Error() string {
	if e.Reason == "" {
		return "job rejected: " + string(e.Code)
	}
	return "job rejected (" + string(e.Code) + "): " + e.Reason
}

// Is makes errors.Is(err, ErrTooLarge) true for any too_large rejection.
func (e *RejectError) Is(target error) bool {
	t, ok := target.(*RejectError)
	return ok && t.Reason == "" && t.Code == e.Code
}

// Sentinels for errors.Is.
var (
	ErrMalformed          = &RejectError{Code: CodeMalformed}
	ErrTooLarge           = &RejectError{Code: CodeTooLarge}
	ErrUnsupportedVersion = &RejectError{Code: CodeUnsupportedVersion}
	ErrInvalidID          = &RejectError{Code: CodeInvalidID}
	ErrInvalidLimits      = &RejectError{Code: CodeInvalidLimits}
	ErrInvalidCode        = &RejectError{Code: CodeInvalidCode}
	ErrUnknownPackage     = &RejectError{Code: CodeUnknownPackage}
	ErrBadPackage         = &RejectError{Code: CodeBadPackage}
	ErrNotAllowed         = &RejectError{Code: CodeNotAllowed}
	ErrUnsupported        = &RejectError{Code: CodeUnsupported}
	ErrTenantMismatch     = &RejectError{Code: CodeInvalidTenant}
	ErrQuotaExceeded      = &RejectError{Code: CodeQuotaExceeded}
	ErrPackageMismatch    = &RejectError{Code: CodePackageMismatch}
	ErrSessionTampered    = &RejectError{Code: CodeSessionTampered}
	ErrUnknownSecret      = &RejectError{Code: CodeUnknownSecret}
	ErrFileNotFound       = &RejectError{Code: CodeFileNotFound}
	ErrInvalidPath        = &RejectError{Code: CodeInvalidPath}
	ErrFileMismatch       = &RejectError{Code: CodeFileMismatch}
)

func reject(code RejectCode, format string, args ...any) *RejectError {
	return &RejectError{Code: code, Reason: fmt.Sprintf(format, args...)}
}

// Policy is what a worker accepts. Jobs may ask for less, never more.
type Policy struct {
	// MaxJobBytes caps the size of a job message.
	MaxJobBytes int
	// MaxCodeBytes caps the size of the code.
	MaxCodeBytes int
	// Timeout is both the default and the maximum of a job's timeout.
	Timeout time.Duration
	// MemoryBytes is both the default and the maximum of a job's memory.
	MemoryBytes uint64
	// MinMemoryBytes is the least memory the runtime can start with.
	MinMemoryBytes uint64
	// Fuel is a job's default fuel and MaxFuel the most it may ask for
	// (zero: the runtime's default and maximum).
	Fuel, MaxFuel uint64
	// Sessions and Trace say whether the worker offers them. Packages are
	// checked by the worker, against the packages bucket.
	Sessions, Trace bool
	// MaxFiles caps the input files a job names (DefaultMaxFiles if
	// zero); their sizes are checked by the worker.
	MaxFiles int
}

// Plan is a validated job's resolved limits.
type Plan struct {
	Timeout     time.Duration
	MemoryBytes uint64
	Fuel        uint64 // zero: the runtime's default
}

// maxListItems bounds packages and callbacks lists.
const maxListItems = 64

// DecodeJob parses a job message. Unknown fields are rejected, so that a
// misspelt limit ("timeout": 5) is an error rather than silently ignored.
func DecodeJob(data []byte, maxBytes int) (*Job, error) {
	if maxBytes > 0 && len(data) > maxBytes {
		return nil, reject(CodeTooLarge, "job message is %d bytes, the limit is %d", len(data), maxBytes)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var job Job
	if err := dec.Decode(&job); err != nil {
		return nil, reject(CodeMalformed, "job is not a valid JSON document: %v", err)
	}
	if dec.More() {
		return nil, reject(CodeMalformed, "trailing data after the job document")
	}
	if job.V == 0 {
		job.V = Version
	}
	return &job, nil
}

// PeekID returns the id of a job document that may otherwise be invalid,
// or "" when there is none to be found.
func PeekID(data []byte) string {
	var probe struct {
		ID any `json:"id"`
	}
	if json.Unmarshal(data, &probe) != nil {
		return ""
	}
	if s, ok := probe.ID.(string); ok {
		return s
	}
	return ""
}

// Validate checks a decoded job against the policy and resolves its limits.
// It does no I/O: package existence is checked by the worker.
func (p Policy) Validate(job *Job) (Plan, error) {
	var plan Plan
	if job.V > Version {
		return plan, reject(CodeUnsupportedVersion, "job version %d, this worker speaks %d", job.V, Version)
	}
	if job.V < 0 {
		return plan, reject(CodeMalformed, "invalid version %d", job.V)
	}
	if !ValidToken(job.ID) {
		return plan, reject(CodeInvalidID, "id %q must be 1-%d letters, digits, '-', '_' or '='", truncateForReason(job.ID), maxIDLen)
	}
	if job.Session != "" && !ValidToken(job.Session) {
		return plan, reject(CodeInvalidID, "session %q must be 1-%d letters, digits, '-', '_' or '='", truncateForReason(job.Session), maxIDLen)
	}
	if p.MaxCodeBytes > 0 && len(job.Code) > p.MaxCodeBytes {
		return plan, reject(CodeTooLarge, "code is %d bytes, the limit is %d", len(job.Code), p.MaxCodeBytes)
	}
	if i := strings.IndexByte(job.Code, 0); i >= 0 {
		return plan, reject(CodeInvalidCode, "NUL byte at offset %d", i)
	}
	if !utf8.ValidString(job.Code) {
		return plan, reject(CodeInvalidCode, "code is not valid UTF-8")
	}

	plan.Timeout = p.Timeout
	switch {
	case job.TimeoutMS < 0:
		return plan, reject(CodeInvalidLimits, "timeout_ms %d is negative", job.TimeoutMS)
	case job.TimeoutMS > 0:
		d := time.Duration(job.TimeoutMS) * time.Millisecond
		if p.Timeout > 0 && d > p.Timeout {
			return plan, reject(CodeInvalidLimits, "timeout_ms %d is above the worker's maximum %d", job.TimeoutMS, p.Timeout.Milliseconds())
		}
		plan.Timeout = d
	}
	plan.MemoryBytes = p.MemoryBytes
	switch {
	case job.MemoryMB < 0:
		return plan, reject(CodeInvalidLimits, "memory_mb %d is negative", job.MemoryMB)
	case job.MemoryMB > 0:
		if job.MemoryMB > 1<<20 { // also keeps the shift below from overflowing
			return plan, reject(CodeInvalidLimits, "memory_mb %d is absurd", job.MemoryMB)
		}
		b := uint64(job.MemoryMB) << 20
		if p.MemoryBytes > 0 && b > p.MemoryBytes {
			return plan, reject(CodeInvalidLimits, "memory_mb %d is above the worker's maximum %d", job.MemoryMB, p.MemoryBytes>>20)
		}
		if b < p.MinMemoryBytes {
			return plan, reject(CodeInvalidLimits, "memory_mb %d is below the %d the interpreter needs", job.MemoryMB, p.MinMemoryBytes>>20)
		}
		plan.MemoryBytes = b
	}

	plan.Fuel = p.Fuel
	if job.Fuel > 0 {
		if p.MaxFuel > 0 && job.Fuel > p.MaxFuel {
			return plan, reject(CodeInvalidLimits, "fuel %d is above the worker's maximum %d", job.Fuel, p.MaxFuel)
		}
		plan.Fuel = job.Fuel
	}

	if job.Session != "" && !p.Sessions {
		return plan, reject(CodeUnsupported, "this worker does not offer sessions")
	}
	if job.Trace && !p.Trace {
		return plan, reject(CodeUnsupported, "this worker does not offer tracing")
	}
	if err := checkPackages(job.Packages); err != nil {
		return plan, err
	}
	if err := checkNames("callback", job.Callbacks); err != nil {
		return plan, err
	}
	if err := checkNames("secret", job.Secrets); err != nil {
		return plan, err
	}
	if err := checkFiles(job.Files, p.MaxFiles); err != nil {
		return plan, err
	}

	// The request's content is the network gateway's to judge (the
	// worker checks that it only narrows its policy); here only its shape.
	if n := bytes.TrimSpace(job.Network); len(n) > 0 && !bytes.Equal(n, []byte("null")) && n[0] != '{' {
		return plan, reject(CodeMalformed, "network must be a JSON object")
	}
	return plan, nil
}

// ValidName reports whether s can name a package or a callback: 1-128
// letters, digits, '-', '_' and '.' (dotted callback namespaces).
func ValidName(s string) bool {
	ok := s != "" && len(s) <= maxIDLen
	for i := 0; ok && i < len(s); i++ {
		c := s[i]
		ok = c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
			c == '-' || c == '_' || c == '.'
	}
	return ok
}

// checkNames validates the names of packages and callbacks.
func checkNames(kind string, names []string) error {
	if len(names) > maxListItems {
		return reject(CodeMalformed, "%d %ss listed, at most %d", len(names), kind, maxListItems)
	}
	for _, n := range names {
		if !ValidName(n) {
			return reject(CodeMalformed, "invalid %s name %q", kind, truncateForReason(n))
		}
	}
	return nil
}

// CheckTenant rejects a job whose tenant field names another tenant than
// the one its subject says (the one it runs for).
func CheckTenant(job *Job, tenant string) error {
	if job.Tenant != "" && job.Tenant != tenant {
		return reject(CodeInvalidTenant, "the job names tenant %q but was submitted for tenant %q",
			truncateForReason(job.Tenant), tenant)
	}
	return nil
}

// PackageRef is a job's reference to a package: a name, and optionally
// the SHA-256 (lower-case hex) its content must have.
type PackageRef struct {
	Name   string
	SHA256 string
}

// String is the reference as a job writes it.
func (r PackageRef) String() string {
	if r.SHA256 == "" {
		return r.Name
	}
	return r.Name + pinSep + r.SHA256
}

const pinSep = "@sha256:"

// ParsePackageRef parses "name" or "name@sha256:<64 hex digits>".
func ParsePackageRef(s string) (PackageRef, error) {
	name, sum, pinned := strings.Cut(s, pinSep)
	if !ValidName(name) {
		return PackageRef{}, reject(CodeMalformed, "invalid package name %q", truncateForReason(name))
	}
	if !pinned {
		return PackageRef{Name: name}, nil
	}
	sum = strings.ToLower(sum)
	if len(sum) != 64 || strings.Trim(sum, "0123456789abcdef") != "" {
		return PackageRef{}, reject(CodeMalformed, "package %q: the pin must be sha256: and 64 hex digits", name)
	}
	return PackageRef{Name: name, SHA256: sum}, nil
}

func checkPackages(refs []string) error {
	if len(refs) > maxListItems {
		return reject(CodeMalformed, "%d packages listed, at most %d", len(refs), maxListItems)
	}
	for _, r := range refs {
		if _, err := ParsePackageRef(r); err != nil {
			return err
		}
	}
	return nil
}

// truncateForReason keeps hostile input from bloating a reason.
func truncateForReason(s string) string {
	const max = 64
	if len(s) <= max {
		return s
	}
	return s[:max] + "..."
}

// AsReject returns err's RejectError, if it is one.
func AsReject(err error) (*RejectError, bool) {
	var re *RejectError
	ok := errors.As(err, &re)
	return re, ok
}
