package sandbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/experimental"
	"github.com/tetratelabs/wazero/sys"

	"github.com/eryx-dev/eryx/runtime/internal/memfs"
)

// softGrace is how long a guest gets to unwind from the KeyboardInterrupt of
// a soft stop before it is stopped hard (which destroys the sandbox).
const softGrace = 250 * time.Millisecond

// Execution flags of eryx_exec; keep in sync with runtime/guest/_eryx.py.
const (
	flagSession  = 1
	flagSnapshot = 2
	flagRestore  = 4
	flagClear    = 8
)

// ExecOptions tune one execution.
type ExecOptions struct {
	// Limits override the sandbox's for this execution; zero fields keep
	// the sandbox's values. MemoryBytes can only narrow the sandbox's
	// (whose memory is reserved when it is created); TmpBytes is fixed.
	Limits Limits
	// OnOutput receives stdout and stderr chunks while the code runs.
	OnOutput OutputHandler
	// Session runs the code in the sandbox's persistent namespace, so that
	// variables survive into the next execution with Session set.
	Session bool
	// Callbacks are the host capabilities the code can call; nil for none.
	Callbacks Callbacks
	// CallbackLimits bound the callbacks; zero fields take the defaults.
	CallbackLimits CallbackLimits
	// OnTrace turns tracing on: it receives the execution's trace events
	// while the code runs. Nil means no tracer is installed at all.
	OnTrace func(TraceEvent)
	// Host serves the guest's other host calls (the network gateway).
	Host HostHandler
	// Network, when set, turns on the guest's network shims and is handed
	// to them as their configuration (JSON object; see netgate).
	Network json.RawMessage
	// Packages are made importable (read-only) for this execution.
	Packages []*Package
	// Env are environment variables of this execution only (os.environ
	// and eryx.secret): the placeholders of a job's secrets.
	Env map[string]string
	// Files are this execution's inputs under /data (read-only, fetched
	// on first open). Whatever the code writes under /output comes back
	// in Result.OutputFiles, within Limits.OutputFilesBytes and OutputFiles.
	Files []InputFile
}

// Sandbox is one isolated interpreter. Executions on a sandbox are
// serialised; use one sandbox per job unless state should be shared.
type Sandbox struct {
	eng         *Engine
	limits      Limits
	mod         api.Module
	mem         *guestMemory
	tmp         *memfs.FS
	pkgs        *pkgFS
	data        *dataFS
	out         *outFS
	countdown   api.MutableGlobal // the preemption countdown; nil without preemption
	preemptMu   sync.Mutex        // orders countdown refills against stop requests
	fnAlloc     api.Function
	fnFree      api.Function
	fnExec      api.Function
	fnInterrupt api.Function

	mu     sync.Mutex // held during an execution
	closed bool
	// spent says why the sandbox must not serve another job even after a
	// reset ("" if it may): its last job exceeded the memory limit.
	spent string

	// What Reset restores (in-place resets only).
	fds     *fdTable
	globals []savedGlobal

	curMu  sync.Mutex
	cur    *capture
	cancel context.CancelFunc // of the running execution, if any
}

// Cancel stops the running execution, if any, as if its context had been
// cancelled: it ends with StatusCancelled and ErrCancelled. It is safe to
// call from any goroutine, at any time.
func (sb *Sandbox) Cancel() {
	sb.curMu.Lock()
	cancel := sb.cancel
	sb.curMu.Unlock()
	if cancel != nil {
		cancel()
	}
}

// NewSandbox creates a sandbox from the engine's pre-initialised image.
// limits' zero fields take the engine's defaults.
func (e *Engine) NewSandbox(ctx context.Context, limits Limits) (*Sandbox, error) {
	lim := mergeLimits(e.cfg.Limits, limits)
	if err := lim.Validate(); err != nil {
		return nil, err
	}
	if lim.MemoryBytes < uint64(e.image.size) {
		return nil, fmt.Errorf("%w: memory %d bytes is below the %d-byte interpreter image",
			ErrInvalidLimits, lim.MemoryBytes, e.image.size)
	}
	sb := &Sandbox{eng: e, limits: lim}
	alloc := &memoryAllocator{limit: lim.MemoryBytes, image: e.image, tracker: e.tracker}
	sb.tmp = memfs.New(int64(lim.TmpBytes))
	sb.pkgs = &pkgFS{}
	sb.data, sb.out = &dataFS{}, &outFS{}
	cfg := e.moduleConfig(streamWriter{sb, Stdout}, streamWriter{sb, Stderr}, sb.tmp, sb.pkgs, sb.data, sb.out).
		WithStartFunctions() // the image already holds an initialised interpreter
	mod, err := e.rt.InstantiateModule(experimental.WithMemoryAllocator(ctx, alloc), e.compiled, cfg)
	if err != nil {
		return nil, fmt.Errorf("sandbox: instantiating: %w", err)
	}
	if alloc.err != nil || alloc.mem == nil {
		_ = mod.Close(ctx)
		return nil, fmt.Errorf("sandbox: reserving guest memory: %w", alloc.err)
	}
	sb.mod, sb.mem = mod, alloc.mem
	if err := sb.restore(); err != nil {
		_ = sb.Close(ctx)
		return nil, err
	}
	sb.fnAlloc = mod.ExportedFunction("eryx_alloc")
	sb.fnFree = mod.ExportedFunction("eryx_free")
	sb.fnExec = mod.ExportedFunction("eryx_exec")
	sb.fnInterrupt = mod.ExportedFunction("eryx_interrupt")
	if g, ok := mod.ExportedGlobal(flagExport).(api.MutableGlobal); ok {
		sb.countdown = g
	}
	// Without in-place resets, only Reset (an explicit API) uses this, and
	// it closes the sandbox if the state could not be recorded.
	if err := sb.recordInitialState(); err != nil && e.tracker != nil {
		_ = sb.Close(ctx)
		return nil, err
	}
	return sb, nil
}

// restore completes a fresh instance: its memory already maps the image
// (see memoryAllocator), so what is left is the image's size and the one
// mutable global the image does not hold.
func (sb *Sandbox) restore() error {
	mem := sb.mod.Memory()
	size := uint64(sb.eng.image.size)
	if cur := uint64(mem.Size()); cur < size {
		if _, ok := mem.Grow(uint32((size - cur) / 65536)); !ok {
			return fmt.Errorf("sandbox: growing memory to the %d-byte image", size)
		}
	}
	g, ok := sb.mod.ExportedGlobal(stackPointer).(api.MutableGlobal)
	if !ok {
		return errors.New("sandbox: " + stackPointer + " is not a mutable global")
	}
	g.Set(sb.eng.sp)
	return nil
}

// Close releases the sandbox. It is safe to call more than once.
func (sb *Sandbox) Close(ctx context.Context) error {
	sb.mu.Lock()
	defer sb.mu.Unlock()
	return sb.closeLocked(ctx)
}

func (sb *Sandbox) closeLocked(ctx context.Context) error {
	if sb.closed {
		return nil
	}
	sb.closed = true
	err := sb.mod.Close(ctx)
	sb.mem.Free()
	return err
}

func (sb *Sandbox) currentCapture() *capture {
	sb.curMu.Lock()
	defer sb.curMu.Unlock()
	return sb.cur
}

func (sb *Sandbox) setCapture(c *capture) {
	sb.curMu.Lock()
	sb.cur = c
	sb.curMu.Unlock()
}

// Execute runs code in the sandbox. The returned error is nil whenever the
// code ran, whatever it did; Result.Status tells. Timeouts and cancellation
// return the partial Result with an error wrapping ErrTimeout or
// ErrCancelled. A sandbox stopped hard, or whose guest crashed, is closed.
func (sb *Sandbox) Execute(ctx context.Context, code string, opts ExecOptions) (*Result, error) {
	lim := mergeLimits(sb.limits, opts.Limits)
	if err := lim.Validate(); err != nil {
		return nil, err
	}
	if len(code) > lim.CodeBytes {
		return nil, fmt.Errorf("%w: %d bytes, limit %d", ErrCodeTooLarge, len(code), lim.CodeBytes)
	}
	if i := strings.IndexByte(code, 0); i >= 0 {
		return nil, fmt.Errorf("%w: NUL byte at offset %d", ErrInvalidCode, i)
	}
	var flags uint32
	if opts.Session {
		flags |= flagSession
	}
	res, _, err := sb.exec(ctx, []byte(code), flags, lim, &opts, nil)
	return res, err
}

// exec runs one call of eryx_exec under the watchdog: a user execution or
// a session operation (flags). extra is merged into the guest options.
func (sb *Sandbox) exec(ctx context.Context, input []byte, flags uint32, lim Limits, opts *ExecOptions,
	extra map[string]any) (*Result, *execState, error) {
	if !sb.mu.TryLock() {
		return nil, nil, ErrBusy
	}
	defer sb.mu.Unlock()
	if sb.closed {
		return nil, nil, ErrSandboxClosed
	}
	if err := ctx.Err(); err != nil {
		return &Result{Status: StatusCancelled}, nil, interruptErr(ErrCancelled, err)
	}
	guestOpts, err := sb.guestOptions(ctx, opts, extra)
	if err != nil {
		return nil, nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// Inputs are fetched with a context that ends when the execution is
	// stopped, so a slow fetch cannot outlive a timeout or cancel.
	fetchCtx, stopFetch := context.WithCancel(ctx)
	defer stopFetch()
	if err := sb.data.set(fetchCtx, opts.Files); err != nil {
		return nil, nil, err
	}
	defer sb.data.clear() // the inputs' bytes go with the execution
	sb.curMu.Lock()
	sb.cancel = cancel
	sb.curMu.Unlock()
	defer func() {
		sb.curMu.Lock()
		sb.cancel = nil
		sb.curMu.Unlock()
	}()
	capt := newCapture(lim.OutputBytes, opts.OnOutput)
	sb.setCapture(capt)
	defer sb.setCapture(nil)
	st := &execState{sb: sb, interrupt: make(chan struct{}), opts: opts, limitHit: make(chan struct{}),
		fuelOut: make(chan struct{}),
		trace:   traceBudget{maxEvents: lim.TraceEvents, maxBytes: lim.TraceBytes}}
	st.calls = newHostCalls(ctx, opts, lim, st.exceeded)
	sb.mem.setLimit(lim.MemoryBytes)
	sb.pkgs.set(opts.Packages)
	sb.out.reset(int64(lim.OutputFilesBytes), lim.OutputFiles)
	sb.mem.failed.Store(false)
	sb.startFuel(st, lim.Fuel)

	start := time.Now()
	done := make(chan struct{})
	watchdogDone := make(chan struct{})
	go func() {
		defer close(watchdogDone)
		sb.watchdog(ctx, st, lim.Timeout, done)
	}()
	go func() {
		select {
		case <-st.interrupt:
			stopFetch()
		case <-done:
		}
	}()
	callErr := sb.run(withState(ctx, st), input, guestOpts, flags)
	close(done)
	<-watchdogDone
	st.calls.close()
	select {
	case <-st.limitHit:
		// The code may have finished before the watchdog stopped it (its
		// refused calls need not raise): the budget it exceeded still
		// decides the outcome, unless a timeout or cancel came first.
		if st.reason == nil {
			st.reason, st.cause = ErrLimitExceeded, st.limit
		}
	default:
	}
	if st.fuel.exhausted {
		// Fuel is only declared exhausted while nothing else is stopping
		// the execution, so it came first; the watchdog may not have seen
		// it before the code returned.
		st.reason, st.cause, st.limit = ErrFuelExhausted, nil, nil
	}

	res := &Result{
		Stdout:          capt.stdout.String(),
		Stderr:          capt.stderr.String(),
		OutputTruncated: capt.truncated,
		TraceTruncated:  st.trace.truncated,
		FuelConsumed:    sb.fuelConsumed(st),
		Stats: Stats{
			Duration:        time.Since(start),
			PeakMemoryBytes: sb.mem.peak(),
			MemoryLimitHit:  sb.mem.failed.Load(),
		},
	}
	if res.Stats.MemoryLimitHit {
		sb.spent = "its last job hit the memory limit"
	}
	// Collected whatever the outcome: a failed or stopped job's files are
	// kept too (the guest is no longer running, even after a hard stop).
	res.OutputFiles, res.OutputFilesLimit = sb.out.collect()
	res, err = sb.finish(ctx, st, res, callErr)
	return res, st, err
}

// run copies the input and options into the guest and calls eryx_exec.
func (sb *Sandbox) run(ctx context.Context, input, guestOpts []byte, flags uint32) error {
	n := uint64(len(input))
	res, err := sb.fnAlloc.Call(ctx, n+uint64(len(guestOpts)))
	if err != nil {
		return err
	}
	ptr := res[0]
	if ptr == 0 {
		return fmt.Errorf("%w: no guest memory for %d bytes of input", ErrGuestCrashed, n)
	}
	mem := sb.mod.Memory()
	if !mem.Write(uint32(ptr), input) || !mem.Write(uint32(ptr+n), guestOpts) {
		return fmt.Errorf("%w: input buffer out of bounds", ErrGuestCrashed)
	}
	res, err = sb.fnExec.Call(ctx, ptr, n, ptr+n, uint64(len(guestOpts)), uint64(flags))
	if err != nil {
		return err
	}
	if _, err := sb.fnFree.Call(ctx, ptr); err != nil {
		return err
	}
	if int32(res[0]) != 0 {
		return fmt.Errorf("%w: guest runtime failed (%d)", ErrGuestCrashed, int32(res[0]))
	}
	return nil
}

// watchdog enforces the timeout and cancellation: first a soft stop (a
// KeyboardInterrupt raised inside Python, which keeps the sandbox usable),
// then, if the guest has not returned within softGrace, a hard stop at the
// next loop check.
func (sb *Sandbox) watchdog(ctx context.Context, st *execState, timeout time.Duration, done <-chan struct{}) {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case <-done:
		return
	case <-timer.C:
		st.reason = ErrTimeout
	case <-st.limitHit:
		st.reason, st.cause = ErrLimitExceeded, st.limit
	case <-st.fuelOut:
		// The hook has queued the interrupt and counts the reserve down;
		// here only what it cannot do. The timeout stays a backstop.
		st.reason = ErrFuelExhausted
		close(st.interrupt)
		st.calls.cancel()
		select {
		case <-done:
		case <-timer.C:
			sb.preemptNow(st, phaseHard)
		}
		return
	case <-ctx.Done():
		st.reason = ErrCancelled
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			st.reason = ErrTimeout
		}
		st.cause = ctx.Err()
	}
	close(st.interrupt)
	// In-flight host calls are abandoned: their replies could not be used.
	st.calls.cancel()
	sb.preemptNow(st, phaseSoft)
	grace := time.NewTimer(softGrace)
	defer grace.Stop()
	select {
	case <-done:
	case <-grace.C:
		sb.preemptNow(st, phaseHard)
	}
}

// preemptNow moves the execution to phase and makes the guest call the
// preempt hook at its next loop check. The store races with the guest's own
// decrements; a lost write only delays the hook until the countdown runs
// out by itself, at most preemptBudget iterations later.
func (sb *Sandbox) preemptNow(st *execState, phase int32) {
	sb.preemptMu.Lock()
	defer sb.preemptMu.Unlock()
	st.phase.Store(phase)
	if sb.countdown != nil {
		// Keep the fuel count: what was left in the countdown was not used.
		// (The guest may decrement concurrently, so after a stop the count
		// is only approximate.)
		st.fuel.given = st.fuel.consumed(countdownValue(sb.countdown))
		sb.countdown.Set(0)
	}
}

// finish turns the guest's report and the call's error into the Result.
func (sb *Sandbox) finish(ctx context.Context, st *execState, res *Result, callErr error) (*Result, error) {
	if callErr != nil {
		// Whatever happened, this instance's state can no longer be trusted.
		_ = sb.closeLocked(ctx)
	}
	if st.reason != nil {
		res.Status = StatusCancelled
		switch {
		case errors.Is(st.reason, ErrTimeout):
			res.Status = StatusTimeout
		case errors.Is(st.reason, ErrFuelExhausted):
			res.Status = StatusFuelExhausted
			limit := st.fuel.limit - fuelReserve
			res.Error = &PythonError{Type: "eryx.FuelExhausted",
				Message: fmt.Sprintf("fuel limit %d exhausted", limit)}
			return res, fmt.Errorf("%w: limit %d", ErrFuelExhausted, limit)
		case errors.Is(st.reason, ErrLimitExceeded):
			res.Status, res.Limit = StatusLimit, st.limit
			res.Error = &PythonError{Type: "eryx.LimitExceeded", Message: st.limit.Error()}
			return res, st.limit
		}
		return res, interruptErr(st.reason, st.cause)
	}
	if callErr != nil {
		var exit *sys.ExitError
		if errors.As(callErr, &exit) {
			// The guest called proc_exit directly (os._exit).
			code := int(exit.ExitCode())
			res.Status, res.ExitCode = StatusExit, &code
			return res, nil
		}
		res.Status = StatusCrashed
		if res.Stats.MemoryLimitHit {
			res.Error = &PythonError{Type: "MemoryError", Message: "the interpreter ran out of memory and aborted"}
		}
		return res, fmt.Errorf("%w: %w", ErrGuestCrashed, callErr)
	}
	var out guestOutcome
	if err := json.Unmarshal(st.outcome, &out); err != nil || out.Status == "" {
		// The code tampered with the runtime's reporting (say, by
		// monkeypatching json). That is its own loss: report it as its
		// error, and retire the sandbox whose runtime can't be trusted.
		_ = sb.closeLocked(ctx)
		res.Status = StatusError
		res.Error = &PythonError{Type: "RuntimeError",
			Message: "eryx: the code broke the sandbox runtime's result reporting"}
		return res, nil //nolint:nilerr // a user-caused outcome, reported in Result
	}
	res.Status = out.Status
	res.Error = out.Error
	res.skipped = out.Skipped
	res.ExitCode = out.ExitCode
	res.ValueError = out.ResultError
	if len(out.Result) > 0 {
		res.Value = out.Result
	}
	return res, nil
}

func interruptErr(reason, cause error) error {
	if cause == nil {
		return reason
	}
	return fmt.Errorf("%w: %w", reason, cause)
}

// Execute runs code in a fresh sandbox that is discarded afterwards.
// opts.Limits.MemoryBytes sizes that sandbox.
func (e *Engine) Execute(ctx context.Context, code string, opts ExecOptions) (*Result, error) {
	sb, err := e.NewSandbox(ctx, opts.Limits)
	if err != nil {
		return nil, err
	}
	defer func() { _ = sb.Close(context.WithoutCancel(ctx)) }()
	return sb.Execute(ctx, code, opts)
}

func mergeLimits(base, over Limits) Limits {
	if over.Timeout != 0 {
		base.Timeout = over.Timeout
	}
	if over.MemoryBytes != 0 {
		base.MemoryBytes = over.MemoryBytes
	}
	if over.OutputBytes != 0 {
		base.OutputBytes = over.OutputBytes
	}
	if over.CodeBytes != 0 {
		base.CodeBytes = over.CodeBytes
	}
	if over.TmpBytes != 0 {
		base.TmpBytes = over.TmpBytes
	}
	if over.HostCalls != 0 {
		base.HostCalls = over.HostCalls
	}
	if over.HostCallBytes != 0 {
		base.HostCallBytes = over.HostCallBytes
	}
	if over.HostCallsRunning != 0 {
		base.HostCallsRunning = over.HostCallsRunning
	}
	if over.TraceEvents != 0 {
		base.TraceEvents = over.TraceEvents
	}
	if over.TraceBytes != 0 {
		base.TraceBytes = over.TraceBytes
	}
	if over.Fuel != 0 {
		base.Fuel = over.Fuel
	}
	if over.OutputFilesBytes != 0 {
		base.OutputFilesBytes = over.OutputFilesBytes
	}
	if over.OutputFiles != 0 {
		base.OutputFiles = over.OutputFiles
	}
	return base.withDefaults()
}

// Execution phases, driven by the watchdog and read by the preempt hook.
const (
	phaseRunning int32 = iota
	phaseSoft
	phaseHard
)

// execState is what host functions know about the running execution; it
// travels in the context given to the guest call.
type execState struct {
	sb        *Sandbox
	opts      *ExecOptions
	calls     *hostCalls
	phase     atomic.Int32
	softSent  bool          // only touched on the executing goroutine
	interrupt chan struct{} // closed when a stop begins; wakes sleeps
	reason    error         // ErrTimeout or ErrCancelled, set before phase
	cause     error         // the context's error, if that was the trigger
	outcome   []byte
	snapshot  []byte // session state reported by a snapshot operation
	trace     traceBudget
	fuel      fuelMeter     // guarded by sb.preemptMu
	fuelOut   chan struct{} // closed by the hook when the fuel is used up

	limitOnce sync.Once
	limit     *LimitError   // the budget exceeded first; set before limitHit closes
	limitHit  chan struct{} // closed when a budget is exceeded: the watchdog stops the execution
}

// exceeded ends the execution for exceeding a budget; the first one counts.
// Safe from any goroutine.
func (st *execState) exceeded(le *LimitError) {
	st.limitOnce.Do(func() {
		st.limit = le
		close(st.limitHit)
	})
}

type stateKey struct{}

func withState(ctx context.Context, st *execState) context.Context {
	return context.WithValue(ctx, stateKey{}, st)
}

func stateFrom(ctx context.Context) *execState {
	st, _ := ctx.Value(stateKey{}).(*execState)
	return st
}
