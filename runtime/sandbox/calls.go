package sandbox

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/tetratelabs/wazero/api"
)

// Host calls: the guest starts an operation with eryx.call, keeps running
// (its asyncio loop has other tasks), and collects the reply with
// eryx.reply once eryx.wait says something completed. Operations run on
// their own goroutines, which is what makes asyncio.gather over callbacks
// concurrent on the host.
//
// Operations are launched when the guest next waits, not when it calls:
// by then all the calls of a gather are known, and when the guest waits
// with no deadline the last one runs on the guest's own goroutine. Handing
// a call to another thread and waking the guest back costs tens of
// microseconds, more than a typical in-process callback.

// Operation names of the guest's host calls; keep in sync with _eryx.py.
const opCallback = "callback"

// callReply is the JSON reply document of every host call.
type callReply struct {
	OK    json.RawMessage `json:"ok,omitempty"`
	Error *CallbackError  `json:"error,omitempty"`
}

// hostCalls tracks the host calls of one execution, under its budgets
// (Limits.HostCalls, HostCallBytes, HostCallsRunning): a call is admitted
// before its payload is copied out of the guest, and an execution that
// exceeds a budget is stopped (onLimit) with every later call refused.
type hostCalls struct {
	ctx     context.Context // ends with the execution
	cancel  context.CancelFunc
	opts    *ExecOptions
	limits  CallbackLimits
	lim     Limits
	onLimit func(*LimitError)

	mu       sync.Mutex
	next     int32
	calls    map[int32]*pendingCall
	queued   []queuedCall // started by the guest, not launched yet
	running  int          // launched, not completed
	finished int          // completed, not yet collected
	held     int          // bytes: payloads of unfinished calls, replies of finished ones
	started  int          // callback invocations so far
	failed   bool         // a budget was exceeded: every new call is refused
	wake     chan struct{}
	wg       sync.WaitGroup
}

type queuedCall struct {
	pc *pendingCall
	fn func(ctx context.Context) ([]byte, error)
}

type pendingCall struct {
	done     bool
	launched bool
	size     int // what the call counts in hostCalls.held
	reply    []byte
}

func newHostCalls(ctx context.Context, opts *ExecOptions, lim Limits, onLimit func(*LimitError)) *hostCalls {
	ctx, cancel := context.WithCancel(ctx)
	return &hostCalls{
		ctx: ctx, cancel: cancel, opts: opts, lim: lim, onLimit: onLimit,
		limits: opts.CallbackLimits.withDefaults(),
		calls:  make(map[int32]*pendingCall),
		wake:   make(chan struct{}, 1),
	}
}

// close cancels outstanding operations and waits for their goroutines.
func (h *hostCalls) close() {
	h.cancel()
	h.wg.Wait()
}

// admit registers a call that will hold size bytes, or refuses it (ok
// false) when that would exceed a budget, which ends the execution.
func (h *hostCalls) admit(size int) (id int32, pc *pendingCall, ok bool) {
	h.mu.Lock()
	var over *LimitError
	switch {
	case h.failed:
	case len(h.calls)+1 > h.lim.HostCalls:
		over = &LimitError{Limit: LimitHostCalls, Max: int64(h.lim.HostCalls), Want: int64(len(h.calls) + 1)}
	case h.held+size > h.lim.HostCallBytes:
		over = &LimitError{Limit: LimitHostCallBytes, Max: int64(h.lim.HostCallBytes), Want: int64(h.held + size)}
	default:
		h.next++
		id, pc = h.next, &pendingCall{size: size}
		h.calls[id] = pc
		h.held += size
		h.mu.Unlock()
		return id, pc, true
	}
	if over != nil {
		h.failed = true
	}
	h.mu.Unlock()
	if over != nil {
		h.onLimit(over)
	}
	return 0, nil, false
}

// enqueue queues an admitted call to run fn; launch runs it.
func (h *hostCalls) enqueue(id int32, pc *pendingCall, fn func(ctx context.Context) ([]byte, error)) int32 {
	h.mu.Lock()
	h.queued = append(h.queued, queuedCall{pc: pc, fn: fn})
	h.mu.Unlock()
	return id
}

// takeQueued removes up to the free running slots' worth of queued calls,
// counting them as running. Called with h.mu held.
func (h *hostCalls) takeQueued() []queuedCall {
	k := min(h.lim.HostCallsRunning-h.running, len(h.queued))
	if k <= 0 || h.ctx.Err() != nil {
		return nil
	}
	q := slices.Clone(h.queued[:k])
	h.queued = slices.Delete(h.queued, 0, k)
	for _, c := range q {
		c.pc.launched = true
	}
	h.running += k
	return q
}

// launch runs the queued calls that have a running slot: each on its own
// goroutine, except that with inline, when nothing else stays queued, the
// last runs on the caller's (the guest's) goroutine. Calls left queued are
// launched as running ones complete.
func (h *hostCalls) launch(inline bool) {
	h.mu.Lock()
	q := h.takeQueued()
	inline = inline && len(h.queued) == 0
	h.mu.Unlock()
	for i, c := range q {
		if inline && i == len(q)-1 {
			out, err := c.fn(h.ctx)
			h.complete(c.pc, out, err)
			return
		}
		h.goRun(c)
	}
}

func (h *hostCalls) goRun(c queuedCall) {
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		out, err := c.fn(h.ctx)
		h.complete(c.pc, out, err)
	}()
}

// startDone registers a call whose reply is already known (a refusal); -1
// when even that is over budget.
func (h *hostCalls) startDone(err error) int32 {
	id, pc, ok := h.admit(0)
	if !ok {
		return -1
	}
	h.complete(pc, nil, err)
	return id
}

func (h *hostCalls) complete(pc *pendingCall, out []byte, err error) {
	if err == nil && len(out) > h.lim.HostCallBytes {
		// Not even worth encoding: it could never be held.
		err = &LimitError{Limit: LimitHostCallBytes, Max: int64(h.lim.HostCallBytes), Want: int64(len(out))}
		out = nil
	}
	var reply []byte
	if err != nil {
		reply = encodeReply(callReply{Error: toCallbackError(err)})
	} else {
		if len(out) == 0 {
			out = []byte("null")
		}
		reply = encodeReply(callReply{OK: out})
	}
	h.mu.Lock()
	h.held -= pc.size
	if pc.launched {
		h.running--
	}
	var over *LimitError
	if errors.As(err, &over) || h.held+len(reply) > h.lim.HostCallBytes {
		// The reply would be held beyond the budget: drop it.
		if over == nil {
			over = &LimitError{Limit: LimitHostCallBytes, Max: int64(h.lim.HostCallBytes), Want: int64(h.held + len(reply))}
		}
		reply = encodeReply(callReply{Error: &CallbackError{Type: "eryx.LimitExceeded", Message: over.Error()}})
		h.failed = true
	}
	pc.size = len(reply)
	h.held += pc.size
	pc.done, pc.reply = true, reply
	h.finished++
	next := h.takeQueued()
	h.mu.Unlock()
	if over != nil {
		h.onLimit(over)
	}
	select {
	case h.wake <- struct{}{}:
	default:
	}
	for _, c := range next {
		h.goRun(c)
	}
}

// encodeReply encodes a reply without HTML escaping, so that a reply is
// never much larger than the result it carries.
func encodeReply(r callReply) []byte {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(r) // a RawMessage already checked valid, a CallbackError
	return bytes.TrimSuffix(b.Bytes(), []byte("\n"))
}

// reply returns a finished call's reply and forgets the call, or the
// guest-visible codes -1 (unknown) and -2 (pending).
func (h *hostCalls) reply(id int32, collect bool) ([]byte, int32) {
	h.mu.Lock()
	defer h.mu.Unlock()
	pc, ok := h.calls[id]
	switch {
	case !ok:
		return nil, -1
	case !pc.done:
		return nil, -2
	}
	if collect {
		delete(h.calls, id)
		h.finished--
		h.held -= pc.size
	}
	return pc.reply, int32(len(pc.reply))
}

// counts returns the calls not finished yet (running or queued) and the
// finished, uncollected ones.
func (h *hostCalls) counts() (running, finished int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.calls) - h.finished, h.finished
}

// toCallbackError gives every error the typed shape Python turns into an
// exception.
func toCallbackError(err error) *CallbackError {
	var ce *CallbackError
	switch {
	case errors.As(err, &ce):
		return ce
	case errors.Is(err, context.DeadlineExceeded):
		return &CallbackError{Type: "TimeoutError", Message: err.Error()}
	case errors.Is(err, ErrUnknownCallback):
		return &CallbackError{Type: "NameError", Message: err.Error()}
	default:
		return &CallbackError{Type: "CallbackError", Message: err.Error()}
	}
}

// callbackSlack is what a callback request may add to its arguments: the
// name and the JSON around them.
const callbackSlack = 256

// invokeCallback serves opCallback: {"name": ..., "args": {...}}. pb is a
// view of guest memory, copied only once the call is admitted.
func (h *hostCalls) invokeCallback(pb []byte) int32 {
	if h.opts.Callbacks == nil {
		return h.startDone(&CallbackError{Type: "NameError", Message: "no callbacks are available to this execution"})
	}
	if len(pb) > h.limits.MaxArgBytes+callbackSlack {
		return h.startDone(&CallbackError{Type: "CallbackLimitError",
			Message: fmt.Sprintf("callback arguments of %d bytes exceed the %d-byte limit", len(pb), h.limits.MaxArgBytes)})
	}
	h.mu.Lock()
	h.started++
	n := h.started
	h.mu.Unlock()
	if n > h.limits.MaxInvocations {
		return h.startDone(&CallbackError{Type: "CallbackLimitError",
			Message: fmt.Sprintf("more than %d callback invocations in one execution", h.limits.MaxInvocations)})
	}
	id, pc, ok := h.admit(len(pb))
	if !ok {
		return -1
	}
	var req struct {
		Name string          `json:"name"`
		Args json.RawMessage `json:"args"`
	}
	// Unmarshal copies what it keeps (Args), so guest memory may move on.
	if err := json.Unmarshal(pb, &req); err != nil {
		h.complete(pc, nil, &CallbackError{Type: "TypeError", Message: "malformed callback request: " + err.Error()})
		return id
	}
	if len(req.Args) > h.limits.MaxArgBytes {
		h.complete(pc, nil, &CallbackError{Type: "CallbackLimitError",
			Message: fmt.Sprintf("arguments of %s are %d bytes, above the %d-byte limit", req.Name, len(req.Args), h.limits.MaxArgBytes)})
		return id
	}
	cbs, limits := h.opts.Callbacks, h.limits
	return h.enqueue(id, pc, func(ctx context.Context) ([]byte, error) {
		ctx, cancel := context.WithTimeout(ctx, limits.Timeout)
		defer cancel()
		out, err := cbs.Invoke(ctx, req.Name, req.Args)
		if err != nil {
			if errors.Is(err, context.DeadlineExceeded) || ctx.Err() == context.DeadlineExceeded {
				return nil, &CallbackError{Type: "TimeoutError",
					Message: fmt.Sprintf("callback %s did not answer within %v", req.Name, limits.Timeout)}
			}
			return nil, err
		}
		if len(out) > limits.MaxResultBytes {
			return nil, &CallbackError{Type: "CallbackLimitError",
				Message: fmt.Sprintf("response of %s is %d bytes, above the %d-byte limit", req.Name, len(out), limits.MaxResultBytes)}
		}
		if len(out) > 0 && !json.Valid(out) {
			return nil, &CallbackError{Type: "CallbackError", Message: fmt.Sprintf("callback %s returned invalid JSON", req.Name)}
		}
		return out, nil
	})
}

// maxOpName bounds an operation name; longer ones are unknown.
const maxOpName = 64

// hostCall is the guest's eryx.call(op, payload) -> handle, or -1 when the
// call is refused: an unknown operation, a payload above the operation's
// maximum, or a budget exceeded (which also ends the execution). Nothing is
// copied out of the guest before the call is admitted.
func hostCall(ctx context.Context, mod api.Module, opPtr, opLen, ptr, n uint32) int32 {
	st := stateFrom(ctx)
	if st == nil || st.calls == nil || opLen > maxOpName {
		return -1
	}
	mem := mod.Memory()
	opb, ok1 := mem.Read(opPtr, opLen)
	pb, ok2 := mem.Read(ptr, n) // a view of guest memory, not a copy
	if !ok1 || !ok2 {
		panic(fmt.Errorf("eryx.call: arguments out of bounds"))
	}
	op := string(opb)
	h := st.calls
	if op == opCallback {
		return h.invokeCallback(pb)
	}
	host := h.opts.Host
	if host == nil {
		return h.startDone(&CallbackError{Type: "PermissionError", Message: fmt.Sprintf("host operation %q is not available", op)})
	}
	maxPayload, served := host.HostOp(op)
	if !served || len(pb) > maxPayload {
		return -1
	}
	id, pc, ok := h.admit(len(pb))
	if !ok {
		return -1
	}
	payload := append([]byte(nil), pb...) // guest memory moves; keep a copy
	return h.enqueue(id, pc, func(ctx context.Context) ([]byte, error) { return host.HostCall(ctx, op, payload) })
}

// hostReply is the guest's eryx.reply(handle, buf, cap): the reply's length,
// copied into buf when it fits (and then forgotten); -1 unknown, -2 pending.
func hostReply(ctx context.Context, mod api.Module, handle int32, ptr, capacity uint32) int32 {
	st := stateFrom(ctx)
	if st == nil || st.calls == nil {
		return -1
	}
	reply, n := st.calls.reply(handle, false)
	if n < 0 || uint32(n) > capacity {
		return n
	}
	if !mod.Memory().Write(ptr, reply) {
		panic(fmt.Errorf("eryx.reply: buffer out of bounds"))
	}
	st.calls.reply(handle, true)
	return n
}

// hostWait blocks the guest's event loop until a timer is due (timeoutNs),
// a host call completes, or the execution is interrupted. It returns the
// number of completed, uncollected calls; -1 when asked to wait forever
// with nothing running, because then nothing could ever wake the loop.
func hostWait(ctx context.Context, mod api.Module, timeoutNs int64) int32 {
	st := stateFrom(ctx)
	if st == nil || st.calls == nil {
		if timeoutNs < 0 {
			return -1
		}
		sleep(ctx, time.Duration(timeoutNs))
		return 0
	}
	h := st.calls
	// Without a deadline nothing else can happen in the guest until a call
	// completes, so the last one may as well run right here.
	h.launch(timeoutNs < 0)
	running, finished := h.counts()
	if finished > 0 {
		return int32(finished)
	}
	if running == 0 && timeoutNs < 0 {
		return -1
	}
	var timer <-chan time.Time
	if timeoutNs >= 0 {
		t := time.NewTimer(time.Duration(timeoutNs))
		defer t.Stop()
		timer = t.C
	}
	select {
	case <-h.wake:
	case <-timer:
	case <-st.interrupt:
	}
	_, finished = h.counts()
	return int32(finished)
}

// hostEmit receives fire-and-forget data from the guest: trace events, and
// the bytes of a session snapshot.
func hostEmit(ctx context.Context, mod api.Module, kindPtr, kindLen, ptr, n uint32) {
	st := stateFrom(ctx)
	if st == nil {
		return
	}
	mem := mod.Memory()
	kind, ok1 := mem.Read(kindPtr, kindLen)
	b, ok2 := mem.Read(ptr, n) // a view of guest memory, not a copy
	if !ok1 || !ok2 {
		panic(fmt.Errorf("eryx.emit: arguments out of bounds"))
	}
	switch string(kind) {
	case "snapshot":
		st.snapshot = append([]byte(nil), b...)
	case "trace":
		if st.opts != nil && st.opts.OnTrace != nil {
			st.trace.emit(b, st.opts.OnTrace)
		}
	}
}

// TraceTruncatedKind is the kind of the last trace event of an execution
// whose trace went over its limits.
const TraceTruncatedKind = "truncated"

// traceBudget counts one execution's trace events against Limits.TraceEvents
// and TraceBytes. It is only used on the guest's goroutine.
type traceBudget struct {
	events, bytes       int
	maxEvents, maxBytes int
	truncated, closed   bool
}

// emit delivers one raw event if it fits the budget. Sizes are checked
// before the event is parsed; an event that is not valid UTF-8 is dropped
// too, so that what is published is never larger than what was counted.
func (t *traceBudget) emit(b []byte, deliver func(TraceEvent)) {
	switch {
	case t.closed:
		return
	case len(b) > MaxTraceEventBytes || !utf8.Valid(b):
		t.truncated = true
		return
	case t.events+1 > t.maxEvents || t.bytes+len(b) > t.maxBytes:
		t.truncated, t.closed = true, true
		deliver(TraceEvent{Kind: TraceTruncatedKind,
			Error: &CallbackError{Type: "eryx.LimitExceeded", Message: fmt.Sprintf(
				"trace truncated after %d events (%d bytes): the limits are %d events and %d bytes",
				t.events, t.bytes, t.maxEvents, t.maxBytes)}})
		return
	}
	var ev TraceEvent
	if err := json.Unmarshal(b, &ev); err != nil {
		return // a malformed event only loses that event
	}
	t.events++
	t.bytes += len(b)
	deliver(ev)
}
