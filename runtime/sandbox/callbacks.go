package sandbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"
)

// CallbackSpec describes one host capability that Python code can call.
type CallbackSpec struct {
	// Name is how Python calls it: "get_time" becomes `await get_time()`,
	// and dotted names become namespaces ("http.get": `await http.get()`).
	Name        string `json:"name"`
	Description string `json:"description"`
	// Schema is the JSON Schema of the callback's keyword arguments (an
	// object schema); positional arguments follow its property order.
	Schema json.RawMessage `json:"parameters_schema,omitempty"`
}

// Callbacks is a catalogue of host capabilities. The platform implements it
// over NATS services; NewCallbacks gives an in-process one.
type Callbacks interface {
	// List returns the callbacks available to an execution.
	List(ctx context.Context) ([]CallbackSpec, error)
	// Invoke runs one callback with a JSON object of arguments. An error
	// surfaces in Python as a catchable exception (see CallbackError).
	// It must return promptly once ctx is done: the execution's timeout
	// and cancellation wait for it (it may run on the guest's goroutine).
	Invoke(ctx context.Context, name string, args json.RawMessage) (json.RawMessage, error)
}

// CallbackError is an error a callback reports to Python with a type name:
// Type "ValueError" raises ValueError, any other type raises
// eryx.CallbackError carrying the type and message.
type CallbackError struct {
	Type    string `json:"type"`
	Message string `json:"message"`
}

func (e *CallbackError) Error() string { return e.Type + ": " + e.Message }

// ErrUnknownCallback is returned by Invoke for a name that is not served.
var ErrUnknownCallback = errors.New("unknown callback")

// CallbackFunc implements one in-process callback. Like Callbacks.Invoke,
// it must return promptly once ctx is done.
type CallbackFunc func(ctx context.Context, args json.RawMessage) (json.RawMessage, error)

// Callback pairs a spec with its in-process implementation.
type Callback struct {
	CallbackSpec
	Func CallbackFunc
}

// LocalCallbacks is an in-process Callbacks catalogue, for tests and for
// embedding eryx in a Go program.
type LocalCallbacks struct {
	mu    sync.RWMutex
	funcs map[string]Callback
}

// NewCallbacks returns a catalogue serving cbs.
func NewCallbacks(cbs ...Callback) *LocalCallbacks {
	l := &LocalCallbacks{funcs: make(map[string]Callback, len(cbs))}
	for _, cb := range cbs {
		l.funcs[cb.Name] = cb
	}
	return l
}

// Add registers or replaces a callback.
func (l *LocalCallbacks) Add(cb Callback) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.funcs[cb.Name] = cb
}

// List implements Callbacks.
func (l *LocalCallbacks) List(context.Context) ([]CallbackSpec, error) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	out := make([]CallbackSpec, 0, len(l.funcs))
	for _, cb := range l.funcs {
		out = append(out, cb.CallbackSpec)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// Invoke implements Callbacks.
func (l *LocalCallbacks) Invoke(ctx context.Context, name string, args json.RawMessage) (json.RawMessage, error) {
	l.mu.RLock()
	cb, ok := l.funcs[name]
	l.mu.RUnlock()
	if !ok {
		return nil, fmt.Errorf("%w %q", ErrUnknownCallback, name)
	}
	return cb.Func(ctx, args)
}

// CallbackLimits bound the callbacks of one execution. Zero fields take the
// defaults; every limit is on.
type CallbackLimits struct {
	// Timeout bounds one invocation (default 10 s).
	Timeout time.Duration
	// MaxInvocations bounds the invocations of one execution (default 1000).
	MaxInvocations int
	// MaxArgBytes bounds the JSON arguments of one invocation (default 1 MiB).
	MaxArgBytes int
	// MaxResultBytes bounds the JSON response of one invocation (default 4 MiB).
	MaxResultBytes int
}

// Callback limit defaults.
const (
	DefaultCallbackTimeout     = 10 * time.Second
	DefaultCallbackInvocations = 1000
	DefaultCallbackArgBytes    = 1 << 20
	DefaultCallbackResultBytes = 4 << 20
)

func (l CallbackLimits) withDefaults() CallbackLimits {
	if l.Timeout <= 0 {
		l.Timeout = DefaultCallbackTimeout
	}
	if l.MaxInvocations <= 0 {
		l.MaxInvocations = DefaultCallbackInvocations
	}
	if l.MaxArgBytes <= 0 {
		l.MaxArgBytes = DefaultCallbackArgBytes
	}
	if l.MaxResultBytes <= 0 {
		l.MaxResultBytes = DefaultCallbackResultBytes
	}
	return l
}

// HostHandler serves the guest's other host calls (the network gateway).
// op names the operation ("net.connect", ...); payload and reply are the
// operation's own encoding. It runs on its own goroutine; ctx ends with the
// execution.
type HostHandler interface {
	// HostOp says whether op is served and the largest payload it takes:
	// other calls are refused before anything is copied out of the guest.
	HostOp(op string) (maxPayload int, ok bool)
	HostCall(ctx context.Context, op string, payload []byte) ([]byte, error)
}

// TraceEvent is one event of an execution's trace (ExecOptions.OnTrace).
type TraceEvent struct {
	// Kind is line, call, return, exception, callback_start, callback_end,
	// network_refused (Callback is then the host, Error the reason), or
	// truncated (TraceTruncatedKind: the last event of a trace that went
	// over its limits; Error says which).
	Kind string `json:"kind"`
	// Line is the line in the user's code.
	Line int `json:"line"`
	// Function is the Python function for call/return/line events.
	Function string `json:"function,omitempty"`
	// Callback names the callback of callback_start/callback_end.
	Callback string `json:"callback,omitempty"`
	// Args are the callback's arguments (callback_start).
	Args json.RawMessage `json:"args,omitempty"`
	// DurationMs is the callback's duration (callback_end).
	DurationMs float64 `json:"duration_ms,omitempty"`
	// Error is the exception (exception) or the callback's error (callback_end).
	Error *CallbackError `json:"error,omitempty"`
}
