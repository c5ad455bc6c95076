// Package preempt rewrites a WebAssembly binary so that a host can interrupt
// a running guest cheaply, even inside loops that never call out.
//
// Native code compiled by wazero cannot be preempted by the Go scheduler: a
// goroutine spinning in a wasm loop holds its P, stalls garbage collection's
// stop-the-world and starves the goroutine that would stop it. wazero's own
// answer (WithCloseOnContextDone) exits to Go at every loop back-edge, which
// costs about 3x on CPU-bound code. Instead, Instrument adds one mutable i32
// global, a countdown, and at the head of every loop the sequence
//
//	global.get $c ; i32.const 1 ; i32.sub ; global.set $c
//	global.get $c ; i32.const 0 ; i32.le_s
//	if
//	  call $hook
//	end
//
// When the countdown runs out the guest calls the hook, an imported host
// function: it refills the countdown (bounding how long the guest runs
// without giving Go a safe point) and can end the call, for example by
// panicking with a sys.ExitError. A host that wants the guest to stop now
// sets the countdown to zero from another goroutine. While it is positive
// the cost is a decrement and one well-predicted branch per iteration.
// This is the same idea as wasmtime's fuel and epoch interruption.
//
// The inserted sequence is balanced and leaves the operand stack untouched,
// so no branch depth, type or index elsewhere in the module changes.
package preempt

import (
	"errors"
	"fmt"
	"unicode/utf8"
)

// Options says how to instrument a module.
type Options struct {
	// HookModule and HookName name a function of type () -> () that the
	// module already imports. The inserted check calls it whenever the
	// decremented countdown is zero or below. Adding an import would shift
	// every function index in the module, so the hook must be there
	// beforehand.
	HookModule, HookName string
	// FlagExport is the export name of the new countdown global, a
	// mutable i32 that starts at 0 so that the first check calls the hook,
	// e.g. "eryx_preempt". It must not already be exported. (The name
	// predates the countdown, when the global was a stop flag.)
	FlagExport string
	// FunctionEntry also inserts the check at the start of every function
	// body, so that deep recursion without loops can be stopped too.
	FunctionEntry bool
}

// Stats describes what Instrument did.
type Stats struct {
	Functions int    // function bodies walked
	Loops     int    // loops that got a check
	Checks    int    // checks inserted in total (loops plus function entries)
	FlagIndex uint32 // global index of the countdown (named for FlagExport)
	HookIndex uint32 // function index of the hook
}

// Errors returned by Instrument, wrapped with details; test with errors.Is.
var (
	ErrNotWasm            = errors.New("preempt: not a wasm binary")
	ErrUnsupportedVersion = errors.New("preempt: unsupported wasm version")
	ErrMalformed          = errors.New("preempt: malformed module")
	ErrUnknownOpcode      = errors.New("preempt: unknown opcode")
	ErrHookNotFound       = errors.New("preempt: hook import not found")
	ErrHookType           = errors.New("preempt: hook import is not a () -> () function")
	ErrExportExists       = errors.New("preempt: flag export name already in use")
	ErrOptions            = errors.New("preempt: invalid options")
)

// Instrument returns a copy of the module binary wasm with a countdown check
// at the head of every loop (and, with opts.FunctionEntry, of every function),
// plus the new countdown global, exported as opts.FlagExport. The input is
// not modified.
func Instrument(wasm []byte, opts Options) ([]byte, error) {
	out, _, err := InstrumentStats(wasm, opts)
	return out, err
}

// InstrumentStats is Instrument that also reports what was done.
func InstrumentStats(wasm []byte, opts Options) ([]byte, Stats, error) {
	if err := opts.validate(); err != nil {
		return nil, Stats{}, err
	}
	m, err := parseModule(wasm)
	if err != nil {
		return nil, Stats{}, err
	}
	hook, err := m.findHook(opts.HookModule, opts.HookName)
	if err != nil {
		return nil, Stats{}, err
	}
	if err := m.checkExportFree(opts.FlagExport); err != nil {
		return nil, Stats{}, err
	}
	return m.rewrite(hook, opts)
}

func (o *Options) validate() error {
	switch {
	case o.HookModule == "" || o.HookName == "":
		return fmt.Errorf("%w: hook module and name are required", ErrOptions)
	case o.FlagExport == "":
		return fmt.Errorf("%w: flag export name is required", ErrOptions)
	case !utf8.ValidString(o.FlagExport):
		// Export names must be valid UTF-8 or the module fails validation.
		return fmt.Errorf("%w: flag export name is not valid UTF-8", ErrOptions)
	}
	return nil
}
