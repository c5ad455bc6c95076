// Package jobs is the wire protocol of the eryx platform: the job and
// result documents, the subjects and streams they travel on, their
// validation, and a client that submits and follows jobs. The worker's job
// loop over a JetStream pull consumer is package jobs/worker.
//
// docs/protocol.md is the normative description; the types here are its
// Go form. Every document carries a version field "v" so that a worker can
// refuse what it does not understand instead of guessing.
package jobs

import (
	"encoding/json"
	"time"
)

// Version is the protocol version of every document this package writes.
// A job with a higher "v" is rejected; a missing "v" is read as Version.
// Version 2 put the tenant in every subject (docs/protocol.md); a job
// document of version 1 is still accepted, on a version 2 subject.
const Version = 2

// Job is a request to run Python code, published to Subjects.Jobs(queue).
type Job struct {
	V int `json:"v"`
	// ID names the job's subjects, so it must be a single subject token
	// (see ValidID). It also deduplicates: the same ID runs once.
	ID string `json:"id"`
	// Tenant, if set, must be the tenant of the subject the job was
	// published on (invalid_tenant otherwise): the subject decides, the
	// field only lets a submitter state what it expects.
	Tenant string `json:"tenant,omitempty"`
	Code   string `json:"code"`
	// Session runs the code in a persistent namespace shared with earlier
	// jobs of the same session.
	Session string `json:"session,omitempty"`
	// TimeoutMS and MemoryMB may lower the worker's limits, never raise
	// them; zero means the worker's limit.
	TimeoutMS int64 `json:"timeout_ms,omitempty"`
	MemoryMB  int64 `json:"memory_mb,omitempty"`
	// Fuel is the job's compute budget (see docs/runtime.md, "Fuel"); it
	// may lower the worker's maximum, never raise it; zero means the
	// worker's default.
	Fuel uint64 `json:"fuel,omitempty"`
	// Secrets name worker secrets the code may use: it sees placeholders
	// (os.environ, eryx.secret) that the network gateway replaces by the
	// values in traffic to the hosts each secret is bound to.
	Secrets []string `json:"secrets,omitempty"`
	// Trace asks for line-level trace events on Subjects.Event(id, Trace).
	Trace bool `json:"trace,omitempty"`
	// Packages name packages to make importable: "name" is the tenant's
	// package of that name, else the platform's; "name@sha256:<hex>"
	// also pins its content (package_mismatch if it differs).
	Packages []string `json:"packages,omitempty"`
	// Callbacks is an allow-list of the worker's callbacks the code may
	// call. Absent (null) means all of them; [] means none. It is encoded
	// without omitempty so that the distinction survives a round trip.
	Callbacks []string `json:"callbacks"`
	// Network is a request that can only narrow the worker's network
	// policy: {"allow": ["host", "*.domain:8443"], "allow_ports": [443],
	// "max_connections": 4, ...} (see docs/protocol.md and package
	// netgate, which interprets it). Absent keeps the worker's policy;
	// {"allow": []} asks for no network at all.
	Network json.RawMessage `json:"network,omitempty"`
	// Files are input files, mounted read-only: guest path
	// "data/<path>" (/data/<path>) → tenant-relative object name in the
	// files bucket, optionally pinned ("name@sha256:<hex>"). See
	// docs/files.md.
	Files map[string]string `json:"files,omitempty"`
}

// Status is the outcome of a job.
type Status string

const (
	StatusOK        Status = "ok"        // the code ran to completion
	StatusError     Status = "error"     // it raised, exited non-zero, or its sandbox crashed
	StatusTimeout   Status = "timeout"   // it ran out of time
	StatusCancelled Status = "cancelled" // a cancel message stopped it, or it never started
	StatusRejected  Status = "rejected"  // it was not run: Result.Code and Reason tell why
	// StatusFuelExhausted: it used up its fuel (the same on every run).
	StatusFuelExhausted Status = "fuel_exhausted"
)

// Result is the one and only document published on Subjects.Event(id,
// EventResult) for a job.
type Result struct {
	V  int    `json:"v"`
	ID string `json:"id"`
	// Tenant is the tenant the job ran for (from its subject).
	Tenant string `json:"tenant"`
	Status Status `json:"status"`
	// Code and Reason explain a rejected (and, in prose, a cancelled) job.
	Code   RejectCode `json:"code,omitempty"`
	Reason string     `json:"reason,omitempty"`

	Stdout string `json:"stdout"`
	Stderr string `json:"stderr"`
	// StdoutTruncated and StderrTruncated flag that this document holds
	// only the start of the stream, to stay within the server's message
	// size; the .stdout and .stderr events carry all of it.
	StdoutTruncated bool `json:"stdout_truncated,omitempty"`
	StderrTruncated bool `json:"stderr_truncated,omitempty"`
	// OutputTruncated flags that the code wrote more than the worker's
	// output limit and the rest was dropped (from both streams).
	OutputTruncated bool `json:"output_truncated,omitempty"`
	// TraceTruncated flags that trace events were dropped: the job went
	// over the worker's trace limits (the last trace event then has kind
	// "truncated"), or an event was too large.
	TraceTruncated bool `json:"trace_truncated,omitempty"`
	// Limit names the host-side budget that stopped the job (its error is
	// then eryx.LimitExceeded), or the tenant quota that rejected it
	// (code quota_exceeded): see docs/protocol.md.
	Limit string `json:"limit,omitempty"`
	// FuelConsumed is the fuel the job used; 0 when it did not run.
	FuelConsumed uint64 `json:"fuel_consumed,omitempty"`
	// RetryAfterMS is, for quota_exceeded, how long until the quota would
	// admit the job (0: as soon as one of the tenant's jobs ends).
	RetryAfterMS int64 `json:"retry_after_ms,omitempty"`

	// Result is the JSON value of the code's `result` variable, if any.
	Result json.RawMessage `json:"result,omitempty"`
	// ResultError says why `result` could not be returned.
	ResultError string     `json:"result_error,omitempty"`
	Error       *ErrorInfo `json:"error,omitempty"`
	// ExitCode is set when the code called sys.exit.
	ExitCode *int `json:"exit_code,omitempty"`

	Session string `json:"session,omitempty"`
	// SessionRevision is the session's revision after this job: the
	// revision its state was saved under (0 when it was not saved).
	SessionRevision uint64 `json:"session_revision,omitempty"`
	// SessionSkipped lists variables the session's snapshot could not
	// keep (open files, generators...): they are gone in the next job.
	SessionSkipped []SkippedVariable `json:"session_skipped,omitempty"`
	// SessionError says why the session's state after this job was not
	// saved (a concurrent job of the session saved first, say).
	SessionError string `json:"session_error,omitempty"`

	// Files are the files the code left under /output, stored in the
	// files bucket (see docs/files.md); also for a failed, timed-out or
	// cancelled job, then flagged partial.
	Files []OutputFile `json:"files,omitempty"`
	// FilesLimit names the /output cap that refused some of the code's
	// writes (output_files_bytes, output_files): the files listed are
	// what fitted.
	FilesLimit string `json:"files_limit,omitempty"`
	// FilesError says which output files could not be stored and why
	// (an invalid name, the bucket full); the others are listed.
	FilesError string `json:"files_error,omitempty"`

	Stats Stats `json:"stats"`
	// Worker is the ERYX_WORKER_ID of the worker that wrote the result.
	Worker string `json:"worker"`
	// Attempt is the delivery that produced the result, from 1: above 1
	// when a worker died running an earlier one.
	Attempt    int       `json:"attempt"`
	FinishedAt time.Time `json:"finished_at"`
}

// SkippedVariable is session state a snapshot could not carry.
type SkippedVariable struct {
	Name   string `json:"name"`
	Reason string `json:"reason"`
}

// ErrorInfo is an exception raised by the job's code, or the platform's
// description of why the code could not finish (Type "SandboxCrashed").
type ErrorInfo struct {
	Type      string `json:"type"`
	Message   string `json:"message"`
	Traceback string `json:"traceback,omitempty"`
	Line      int    `json:"line,omitempty"`
}

// Stats are measurements of one job.
type Stats struct {
	// QueueMS is the time from the job's publication to its start.
	QueueMS float64 `json:"queue_ms"`
	// DurationMS is the execution's wall time.
	DurationMS      float64 `json:"duration_ms"`
	PeakMemoryBytes uint64  `json:"peak_memory_bytes,omitempty"`
	MemoryLimitHit  bool    `json:"memory_limit_hit,omitempty"`
}

// EventKind is the last token of a per-job event subject.
type EventKind string

const (
	EventStdout EventKind = "stdout"
	EventStderr EventKind = "stderr"
	EventTrace  EventKind = "trace"
	EventResult EventKind = "result"
)

// Headers of event messages. Output events carry the raw bytes the code
// wrote as their payload (not JSON: output need not be valid UTF-8), so
// their metadata travels in headers.
const (
	HeaderVersion = "Eryx-V"
	// HeaderAttempt is the delivery of the job that produced the event: a
	// job redelivered after its worker died emits its output again under a
	// higher attempt.
	HeaderAttempt = "Eryx-Attempt"
	// HeaderSeq orders a job's stdout, stderr and trace events across
	// subjects, from 1 within an attempt.
	HeaderSeq = "Eryx-Seq"
	// HeaderWorker is the worker that emitted the event.
	HeaderWorker = "Eryx-Worker"
	// Dead-letter copies keep the original message and say why it is there.
	HeaderDLQReason     = "Eryx-DLQ-Reason"
	HeaderDLQStream     = "Eryx-DLQ-Stream"
	HeaderDLQSequence   = "Eryx-DLQ-Sequence"
	HeaderDLQDeliveries = "Eryx-DLQ-Deliveries"
	HeaderDLQSubject    = "Eryx-DLQ-Subject"
	// HeaderMsgID is JetStream's deduplication header (nats.MsgIdHdr).
	// A job's is MsgID(tenant, id): the jobs stream deduplicates across
	// tenants, so the bare id would let one tenant block another's ids.
	HeaderMsgID = "Nats-Msg-Id"
)

// TraceEvent is the JSON payload of a .trace event.
type TraceEvent struct {
	V       int `json:"v"`
	Attempt int `json:"attempt"`
	Seq     int `json:"seq"`
	// Event is the runtime's trace record (line, event kind, ...), passed
	// through as the runtime produced it.
	Event json.RawMessage `json:"event"`
}

// CancelRequest is the optional JSON payload of a cancel message. An empty
// payload is a valid cancel too.
type CancelRequest struct {
	V      int    `json:"v"`
	Reason string `json:"reason,omitempty"`
}
