package sandbox

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// Errors callers branch on. Execution outcomes that are the user's own doing
// (a Python exception, sys.exit) are not errors: they are in Result.
var (
	// ErrTimeout: the execution ran out of its time budget.
	ErrTimeout = errors.New("sandbox: execution timed out")
	// ErrCancelled: the caller's context was cancelled during the execution.
	ErrCancelled = errors.New("sandbox: execution cancelled")
	// ErrCodeTooLarge: the source exceeds Limits.CodeBytes.
	ErrCodeTooLarge = errors.New("sandbox: code too large")
	// ErrInvalidCode: the source cannot be run at all (e.g. a NUL byte).
	ErrInvalidCode = errors.New("sandbox: invalid code")
	// ErrInvalidLimits: a Limits value that can never work.
	ErrInvalidLimits = errors.New("sandbox: invalid limits")
	// ErrSandboxClosed: the sandbox was closed or is unusable after a hard stop.
	ErrSandboxClosed = errors.New("sandbox: closed")
	// ErrBusy: an execution is already running in this sandbox.
	ErrBusy = errors.New("sandbox: busy")
	// ErrGuestCrashed: the interpreter died (a wasm trap); the sandbox is gone.
	ErrGuestCrashed = errors.New("sandbox: guest crashed")
	// ErrLimitExceeded: the execution was stopped for exceeding a host-side
	// budget; the error also wraps the *LimitError naming it.
	ErrLimitExceeded = errors.New("sandbox: limit exceeded")
	// ErrFuelExhausted: the execution consumed its Limits.Fuel.
	ErrFuelExhausted = errors.New("sandbox: fuel exhausted")
)

// Names of the limits a LimitError reports (part of the job protocol).
const (
	LimitHostCalls     = "host_calls"      // Limits.HostCalls
	LimitHostCallBytes = "host_call_bytes" // Limits.HostCallBytes
)

// LimitError names the budget an execution exceeded.
type LimitError struct {
	Limit string // one of the Limit* names
	Max   int64  // the limit
	Want  int64  // what the execution would have needed
}

func (e *LimitError) Error() string {
	return fmt.Sprintf("limit %s exceeded: %d needed, %d allowed", e.Limit, e.Want, e.Max)
}

// Is makes errors.Is(err, ErrLimitExceeded) hold for a *LimitError alone.
func (e *LimitError) Is(target error) bool { return target == ErrLimitExceeded }

// Status is the outcome of an execution.
type Status string

const (
	StatusOK        Status = "ok"        // the code ran to completion
	StatusError     Status = "error"     // it raised an exception (Result.Error)
	StatusExit      Status = "exit"      // it called sys.exit / raised SystemExit (Result.ExitCode)
	StatusTimeout   Status = "timeout"   // it exceeded Limits.Timeout
	StatusCancelled Status = "cancelled" // the caller cancelled it
	StatusCrashed   Status = "crashed"   // the interpreter itself died
	// StatusLimit: the execution was stopped for exceeding a host-side
	// budget (Result.Limit).
	StatusLimit Status = "limit_exceeded"
	// StatusFuelExhausted: the execution consumed its Limits.Fuel.
	StatusFuelExhausted Status = "fuel_exhausted"
)

// PythonError describes an exception raised by the user's code.
type PythonError struct {
	// Type is the exception's class name, qualified by its module unless it
	// is a builtin (e.g. "ValueError", "json.decoder.JSONDecodeError").
	Type    string `json:"type"`
	Message string `json:"message"`
	// Traceback is the formatted traceback, starting at the user's code.
	Traceback string `json:"traceback"`
	// Line is the line in the user's code where it was raised (0 if unknown).
	Line int `json:"line"`
}

func (e *PythonError) Error() string { return e.Type + ": " + e.Message }

// Stats are measurements of one execution.
type Stats struct {
	Duration time.Duration `json:"duration_ns"`
	// PeakMemoryBytes is the guest's linear memory size at the end, which is
	// its high-water mark (wasm memory never shrinks).
	PeakMemoryBytes uint64 `json:"peak_memory_bytes"`
	// MemoryLimitHit is true when an allocation was refused by the limit.
	MemoryLimitHit bool `json:"memory_limit_hit,omitempty"`
}

// Result is everything an execution produced.
type Result struct {
	Status Status `json:"status"`
	Stdout string `json:"stdout"`
	Stderr string `json:"stderr"`
	// OutputTruncated is true when output beyond Limits.OutputBytes was dropped.
	OutputTruncated bool `json:"output_truncated,omitempty"`
	// TraceTruncated is true when trace events were dropped (over
	// Limits.TraceEvents or TraceBytes, or one above MaxTraceEventBytes).
	TraceTruncated bool `json:"trace_truncated,omitempty"`
	// Limit is the budget that stopped the execution (StatusLimit).
	Limit *LimitError `json:"limit,omitempty"`
	// Value is the JSON of the code's `result` variable, if it set one.
	Value json.RawMessage `json:"result,omitempty"`
	// ValueError explains why `result` could not be returned as JSON.
	ValueError string       `json:"result_error,omitempty"`
	Error      *PythonError `json:"error,omitempty"`
	// ExitCode is set when Status is StatusExit.
	ExitCode *int `json:"exit_code,omitempty"`
	// FuelConsumed is the fuel the execution used (see Limits.Fuel); 0
	// without preemption. Exact unless a timeout or cancel stopped it.
	FuelConsumed uint64 `json:"fuel_consumed"`
	Stats        Stats  `json:"stats"`
	// OutputFiles are the files the code left under /output, whatever the
	// outcome; OutputFilesLimit names the /output cap (LimitOutputFiles,
	// LimitOutputFilesBytes) that refused some of its writes, if any.
	OutputFiles      []OutputFile `json:"-"`
	OutputFilesLimit string       `json:"output_files_limit,omitempty"`

	skipped []SkippedVariable // session operations only
}

// guestOutcome is the JSON document the guest runtime reports (_eryx.py).
type guestOutcome struct {
	Status      Status          `json:"status"`
	Result      json.RawMessage `json:"result"`
	ResultError string          `json:"result_error"`
	ResultRepr  string          `json:"result_repr"`
	Error       *PythonError    `json:"error"`
	ExitCode    *int            `json:"exit_code"`
	// Skipped lists variables a session operation could not handle.
	Skipped []SkippedVariable `json:"skipped"`
}
