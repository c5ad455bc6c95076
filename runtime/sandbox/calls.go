package sandbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

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

// hostCalls tracks the host calls of one execution.
type hostCalls struct {
	ctx    context.Context // ends with the execution
	cancel context.CancelFunc
	opts   *ExecOptions
	limits CallbackLimits

	mu       sync.Mutex
	next     int32
	calls    map[int32]*pendingCall
	queued   []queuedCall // started by the guest, not launched yet
	finished int          // completed, not yet collected
	started  int          // callback invocations so far
	wake     chan struct{}
	wg       sync.WaitGroup
}

type queuedCall struct {
	pc *pendingCall
	fn func(ctx context.Context) ([]byte, error)
}

type pendingCall struct {
	done  bool
	reply []byte
}

func newHostCalls(ctx context.Context, opts *ExecOptions) *hostCalls {
	ctx, cancel := context.WithCancel(ctx)
	return &hostCalls{
		ctx: ctx, cancel: cancel, opts: opts,
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

// start registers a call to run fn; launch runs it.
func (h *hostCalls) start(fn func(ctx context.Context) ([]byte, error)) int32 {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.next++
	id := h.next
	pc := &pendingCall{}
	h.calls[id] = pc
	h.queued = append(h.queued, queuedCall{pc: pc, fn: fn})
	return id
}

// launch runs the queued calls: each on its own goroutine, except that with
// inline the last runs on the caller's (the guest's) goroutine.
func (h *hostCalls) launch(inline bool) {
	h.mu.Lock()
	q := h.queued
	h.queued = nil
	h.mu.Unlock()
	for i, c := range q {
		if inline && i == len(q)-1 {
			out, err := c.fn(h.ctx)
			h.complete(c.pc, out, err)
			return
		}
		h.wg.Add(1)
		go func() {
			defer h.wg.Done()
			out, err := c.fn(h.ctx)
			h.complete(c.pc, out, err)
		}()
	}
}

// startDone registers a call whose reply is already known (a refusal).
func (h *hostCalls) startDone(err error) int32 {
	h.mu.Lock()
	h.next++
	id := h.next
	pc := &pendingCall{}
	h.calls[id] = pc
	h.mu.Unlock()
	h.complete(pc, nil, err)
	return id
}

func (h *hostCalls) complete(pc *pendingCall, out []byte, err error) {
	var reply []byte
	if err != nil {
		reply, _ = json.Marshal(callReply{Error: toCallbackError(err)})
	} else {
		if len(out) == 0 {
			out = []byte("null")
		}
		reply, _ = json.Marshal(callReply{OK: out})
	}
	h.mu.Lock()
	pc.done, pc.reply = true, reply
	h.finished++
	h.mu.Unlock()
	select {
	case h.wake <- struct{}{}:
	default:
	}
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
	}
	return pc.reply, int32(len(pc.reply))
}

// counts returns the calls still running and the finished, uncollected ones.
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

// invokeCallback serves opCallback: {"name": ..., "args": {...}}.
func (h *hostCalls) invokeCallback(payload []byte) int32 {
	if h.opts.Callbacks == nil {
		return h.startDone(&CallbackError{Type: "NameError", Message: "no callbacks are available to this execution"})
	}
	if len(payload) > h.limits.MaxArgBytes+256 {
		return h.startDone(&CallbackError{Type: "CallbackLimitError",
			Message: fmt.Sprintf("callback arguments of %d bytes exceed the %d-byte limit", len(payload), h.limits.MaxArgBytes)})
	}
	var req struct {
		Name string          `json:"name"`
		Args json.RawMessage `json:"args"`
	}
	if err := json.Unmarshal(payload, &req); err != nil {
		return h.startDone(&CallbackError{Type: "TypeError", Message: "malformed callback request: " + err.Error()})
	}
	if len(req.Args) > h.limits.MaxArgBytes {
		return h.startDone(&CallbackError{Type: "CallbackLimitError",
			Message: fmt.Sprintf("arguments of %s are %d bytes, above the %d-byte limit", req.Name, len(req.Args), h.limits.MaxArgBytes)})
	}
	h.mu.Lock()
	h.started++
	n := h.started
	h.mu.Unlock()
	if n > h.limits.MaxInvocations {
		return h.startDone(&CallbackError{Type: "CallbackLimitError",
			Message: fmt.Sprintf("more than %d callback invocations in one execution", h.limits.MaxInvocations)})
	}
	cbs, limits := h.opts.Callbacks, h.limits
	return h.start(func(ctx context.Context) ([]byte, error) {
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

// hostCall is the guest's eryx.call(op, payload) -> handle.
func hostCall(ctx context.Context, mod api.Module, opPtr, opLen, ptr, n uint32) int32 {
	st := stateFrom(ctx)
	if st == nil || st.calls == nil {
		return -1
	}
	mem := mod.Memory()
	opb, ok1 := mem.Read(opPtr, opLen)
	pb, ok2 := mem.Read(ptr, n)
	if !ok1 || !ok2 {
		panic(fmt.Errorf("eryx.call: arguments out of bounds"))
	}
	op := string(opb)
	payload := append([]byte(nil), pb...) // guest memory moves; keep a copy
	h := st.calls
	if op == opCallback {
		return h.invokeCallback(payload)
	}
	if h.opts.Host == nil {
		return h.startDone(&CallbackError{Type: "PermissionError", Message: fmt.Sprintf("host operation %q is not available", op)})
	}
	host := h.opts.Host
	return h.start(func(ctx context.Context) ([]byte, error) { return host.HostCall(ctx, op, payload) })
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
	b, ok2 := mem.Read(ptr, n)
	if !ok1 || !ok2 {
		panic(fmt.Errorf("eryx.emit: arguments out of bounds"))
	}
	switch string(kind) {
	case "snapshot":
		st.snapshot = append([]byte(nil), b...)
	case "trace":
		if st.opts == nil || st.opts.OnTrace == nil {
			return
		}
		var ev TraceEvent
		if err := json.Unmarshal(b, &ev); err != nil {
			return // a malformed event only loses that event
		}
		st.opts.OnTrace(ev)
	}
}
