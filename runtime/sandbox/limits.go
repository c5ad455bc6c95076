package sandbox

import (
	"fmt"
	"time"
)

// Default limits. Every limit is on unless a caller raises it explicitly.
const (
	DefaultTimeout     = 30 * time.Second
	DefaultMemoryBytes = 128 << 20
	DefaultOutputBytes = 1 << 20
	DefaultCodeBytes   = 1 << 20
	DefaultTmpBytes    = 16 << 20
	// Host-side budgets: what the guest can make the host hold for it
	// (see "Host allowance" in docs/operations.md).
	DefaultHostCalls        = 256
	DefaultHostCallBytes    = 16 << 20
	DefaultHostCallsRunning = 16
	DefaultTraceEvents      = 10_000
	DefaultTraceBytes       = 4 << 20
	// DefaultFuel is the compute budget (loop iterations of the
	// interpreter, see Limits.Fuel): generous, tens of minutes of CPU at
	// the 2-7e7 units a second measured, so that the wall-clock timeout
	// normally binds first.
	DefaultFuel = 100_000_000_000
	// /output: bytes of all files together, and files plus directories.
	DefaultOutputFilesBytes = 16 << 20
	DefaultOutputFiles      = 100
	// MaxTraceEventBytes bounds one trace event; larger ones are dropped.
	MaxTraceEventBytes = 64 << 10
	// MaxMemoryBytes is the most any sandbox may be given (wasm32 addresses
	// at most 4 GiB; keeping well below bounds a host's exposure).
	MaxMemoryBytes = 2 << 30
	// MaxFuel keeps fuel arithmetic far from overflowing.
	MaxFuel = 1 << 62
	// minMemoryBytes leaves room for the pre-initialised interpreter.
	minMemoryBytes = 32 << 20
)

// Limits bound one execution. The zero value of a field means "use the
// default", never "unlimited": an unbounded sandbox has to be asked for with
// a large explicit value.
type Limits struct {
	// Timeout is the wall-clock budget of one execution.
	Timeout time.Duration
	// MemoryBytes caps the guest's linear memory; allocations beyond it raise
	// MemoryError inside Python. Fixed when the sandbox is created.
	MemoryBytes uint64
	// OutputBytes caps the captured stdout+stderr; the rest is dropped and
	// the result is flagged as truncated.
	OutputBytes int
	// CodeBytes caps the size of the submitted source.
	CodeBytes int
	// TmpBytes caps the data the code can write to its private, in-memory
	// /tmp (host memory, so it is bounded separately). Fixed per sandbox.
	TmpBytes int
	// HostCalls caps the host calls (callbacks, network operations) pending
	// at once: started by the guest and not yet collected, whether queued,
	// running or answered. Exceeding it ends the execution (LimitError).
	HostCalls int
	// HostCallBytes caps the host memory those calls hold: the payloads of
	// queued and running calls plus the replies not yet collected. A call
	// is checked before its payload is copied out of the guest. Exceeding
	// it ends the execution (LimitError).
	HostCallBytes int
	// HostCallsRunning caps the host calls running at once; later ones
	// wait, queued, for a free slot.
	HostCallsRunning int
	// TraceEvents and TraceBytes cap the trace events delivered to
	// ExecOptions.OnTrace; the rest are dropped, a final "truncated" event
	// is delivered and Result.TraceTruncated is set.
	TraceEvents int
	TraceBytes  int
	// Fuel is the execution's compute budget in units of one executed loop
	// head of the interpreter (wasm level: Python loops and C loops alike).
	// Unlike Timeout it does not depend on the machine or its load: the same
	// code given the same input consumes the same fuel. Exhausting it ends
	// the execution with StatusFuelExhausted. It needs preemption (the
	// default); without it fuel is neither counted nor enforced.
	Fuel uint64
	// OutputFilesBytes caps the data the code can write under /output,
	// OutputFiles the files and directories it can create there (host
	// memory, like /tmp). Writes beyond fail (EIO) and
	// Result.OutputFilesLimit names the cap.
	OutputFilesBytes int
	OutputFiles      int
}

// withDefaults returns l with zero fields replaced by the defaults.
func (l Limits) withDefaults() Limits {
	if l.Timeout == 0 {
		l.Timeout = DefaultTimeout
	}
	if l.MemoryBytes == 0 {
		l.MemoryBytes = DefaultMemoryBytes
	}
	if l.OutputBytes == 0 {
		l.OutputBytes = DefaultOutputBytes
	}
	if l.CodeBytes == 0 {
		l.CodeBytes = DefaultCodeBytes
	}
	if l.TmpBytes == 0 {
		l.TmpBytes = DefaultTmpBytes
	}
	if l.HostCalls == 0 {
		l.HostCalls = DefaultHostCalls
	}
	if l.HostCallBytes == 0 {
		l.HostCallBytes = DefaultHostCallBytes
	}
	if l.HostCallsRunning == 0 {
		l.HostCallsRunning = DefaultHostCallsRunning
	}
	if l.TraceEvents == 0 {
		l.TraceEvents = DefaultTraceEvents
	}
	if l.TraceBytes == 0 {
		l.TraceBytes = DefaultTraceBytes
	}
	if l.Fuel == 0 {
		l.Fuel = DefaultFuel
	}
	if l.OutputFilesBytes == 0 {
		l.OutputFilesBytes = DefaultOutputFilesBytes
	}
	if l.OutputFiles == 0 {
		l.OutputFiles = DefaultOutputFiles
	}
	return l
}

// Validate reports limits that can never work.
func (l Limits) Validate() error {
	switch {
	case l.Timeout < 0:
		return fmt.Errorf("%w: negative timeout %v", ErrInvalidLimits, l.Timeout)
	case l.MemoryBytes != 0 && l.MemoryBytes < minMemoryBytes:
		return fmt.Errorf("%w: memory %d bytes is below the %d MiB the interpreter needs",
			ErrInvalidLimits, l.MemoryBytes, minMemoryBytes>>20)
	case l.MemoryBytes > MaxMemoryBytes:
		return fmt.Errorf("%w: memory %d bytes is above the maximum %d", ErrInvalidLimits, l.MemoryBytes, uint64(MaxMemoryBytes))
	case l.OutputBytes < 0:
		return fmt.Errorf("%w: negative output limit", ErrInvalidLimits)
	case l.CodeBytes < 0:
		return fmt.Errorf("%w: negative code size limit", ErrInvalidLimits)
	case l.TmpBytes < 0:
		return fmt.Errorf("%w: negative /tmp size limit", ErrInvalidLimits)
	case l.HostCalls < 0 || l.HostCallBytes < 0 || l.HostCallsRunning < 0:
		return fmt.Errorf("%w: negative host call limit", ErrInvalidLimits)
	case l.TraceEvents < 0 || l.TraceBytes < 0:
		return fmt.Errorf("%w: negative trace limit", ErrInvalidLimits)
	case l.Fuel > MaxFuel:
		return fmt.Errorf("%w: fuel %d is above the maximum %d", ErrInvalidLimits, l.Fuel, uint64(MaxFuel))
	case l.OutputFilesBytes < 0 || l.OutputFiles < 0:
		return fmt.Errorf("%w: negative /output limit", ErrInvalidLimits)
	}
	return nil
}
