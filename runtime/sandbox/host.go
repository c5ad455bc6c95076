package sandbox

import (
	"context"
	"encoding/binary"
	"fmt"
	"time"

	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"
	"github.com/tetratelabs/wazero/sys"
)

// instantiateHostModules registers the host side of the guest's imports:
// WASI (with our own poll_oneoff) and the "eryx" module of eryx.c.
func (e *Engine) instantiateHostModules(ctx context.Context) error {
	wasi := e.rt.NewHostModuleBuilder(wasi_snapshot_preview1.ModuleName)
	wasi_snapshot_preview1.NewFunctionExporter().ExportFunctions(wasi)
	// wazero's poll_oneoff rejects absolute deadlines (CPython's time.sleep
	// uses them) and cannot be woken up; ours does both.
	wasi.NewFunctionBuilder().
		WithGoModuleFunction(api.GoModuleFunc(e.pollOneoff),
			[]api.ValueType{api.ValueTypeI32, api.ValueTypeI32, api.ValueTypeI32, api.ValueTypeI32},
			[]api.ValueType{api.ValueTypeI32}).
		Export("poll_oneoff")
	if _, err := wasi.Instantiate(ctx); err != nil {
		return fmt.Errorf("sandbox: WASI host module: %w", err)
	}

	h := e.rt.NewHostModuleBuilder(hostModule)
	h.NewFunctionBuilder().WithFunc(hostPreempt).Export(preemptHook)
	h.NewFunctionBuilder().WithFunc(hostResult).Export("result")
	h.NewFunctionBuilder().WithFunc(hostCall).Export("call")
	h.NewFunctionBuilder().WithFunc(hostReply).Export("reply")
	h.NewFunctionBuilder().WithFunc(hostWait).Export("wait")
	h.NewFunctionBuilder().WithFunc(hostEmit).Export("emit")
	if _, err := h.Instantiate(ctx); err != nil {
		return fmt.Errorf("sandbox: eryx host module: %w", err)
	}
	return nil
}

// hostPreempt is the hook the loop checks call whenever the countdown runs
// out: every preemptBudget loop iterations, when the execution's fuel is
// used up, or at once when the watchdog zeroes the countdown. Returning to
// Go here is also what lets the Go scheduler and garbage collector reach a
// goroutine running guest code.
func hostPreempt(ctx context.Context, mod api.Module) {
	st := stateFrom(ctx)
	if st == nil {
		// Pre-initialisation: nothing to stop, just keep going.
		if g, ok := mod.ExportedGlobal(flagExport).(api.MutableGlobal); ok {
			g.Set(preemptBudget)
		}
		return
	}
	sb := st.sb
	// The watchdog zeroes the countdown under the same lock after moving the
	// phase on, so a refill here can never hide a stop request.
	sb.preemptMu.Lock()
	phase := st.phase.Load()
	outOfFuel := false
	if phase != phaseHard && sb.countdown != nil {
		next := st.fuel.refill(countdownValue(sb.countdown))
		if next == 0 {
			switch {
			case phase != phaseRunning:
				// Already being stopped for another reason: that stop
				// decides, so keep the guest unwinding until it lands.
				next = preemptBudget
				st.fuel.given += preemptBudget
			case !st.fuel.exhausted:
				st.fuel.exhausted, outOfFuel = true, true
				st.fuel.limit += fuelReserve
				next = st.fuel.refill(0)
			default:
				// The reserve is gone too.
				sb.preemptMu.Unlock()
				panic(sys.NewExitError(exitPreempted))
			}
		}
		sb.countdown.Set(uint64(next))
	}
	sb.preemptMu.Unlock()
	if outOfFuel {
		// The watchdog takes it from here (wakes sleeps, abandons host
		// calls); the interrupt is queued right now, at a point that is the
		// same on every run.
		close(st.fuelOut)
		phase = phaseSoft
	}
	switch phase {
	case phaseSoft:
		if !st.softSent {
			st.softSent = true
			// Queue a KeyboardInterrupt for the interpreter's next check. If
			// the guest swallows it, the watchdog's hard stop follows (or,
			// out of fuel, the end of the reserve).
			if _, err := sb.fnInterrupt.Call(ctx); err != nil {
				panic(err)
			}
		}
	case phaseHard:
		panic(sys.NewExitError(exitPreempted))
	}
}

// hostResult receives the JSON outcome document from the guest runtime.
func hostResult(ctx context.Context, mod api.Module, ptr, n uint32) {
	st := stateFrom(ctx)
	if st == nil {
		return
	}
	b, ok := mod.Memory().Read(ptr, n)
	if !ok {
		panic(fmt.Errorf("eryx.result: out of bounds %d+%d", ptr, n))
	}
	st.outcome = append(st.outcome[:0], b...)
}

// sleep waits for d unless the execution is interrupted first.
func sleep(ctx context.Context, d time.Duration) {
	if d <= 0 {
		return
	}
	var interrupt <-chan struct{}
	if st := stateFrom(ctx); st != nil {
		interrupt = st.interrupt
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-interrupt:
	}
}

// WASI constants for poll_oneoff.
const (
	subscriptionSize = 48
	eventSize        = 32
	eventTypeClock   = 0
	eventTypeFdRead  = 1
	eventTypeFdWrite = 2
	clockRealtime    = 0
	clockMonotonic   = 1
	flagAbstime      = 1
	errnoSuccess     = 0
	errnoFault       = 21
	errnoInval       = 28
	errnoNotsup      = 58
)

// pollOneoff implements WASI poll_oneoff for a guest without file
// descriptors worth waiting on: clock subscriptions (relative or absolute)
// sleep, interruptibly; fd subscriptions complete at once with ENOTSUP.
func (e *Engine) pollOneoff(ctx context.Context, mod api.Module, stack []uint64) {
	in, out, nsubs, resultPtr := uint32(stack[0]), uint32(stack[1]), uint32(stack[2]), uint32(stack[3])
	stack[0] = uint64(e.poll(ctx, mod, in, out, nsubs, resultPtr))
}

func (e *Engine) poll(ctx context.Context, mod api.Module, in, out, nsubs, resultPtr uint32) uint32 {
	if nsubs == 0 {
		return errnoInval
	}
	mem := mod.Memory()
	subs, ok := mem.Read(in, nsubs*subscriptionSize)
	if !ok {
		return errnoFault
	}
	events, ok := mem.Read(out, nsubs*eventSize)
	if !ok {
		return errnoFault
	}
	le := binary.LittleEndian
	var (
		nevents   uint32
		wait      = time.Duration(-1)
		immediate bool
	)
	for i := uint32(0); i < nsubs; i++ {
		s := subs[i*subscriptionSize : (i+1)*subscriptionSize]
		ev := events[nevents*eventSize : (nevents+1)*eventSize]
		clear(ev)
		copy(ev[0:8], s[0:8]) // userdata
		ev[10] = s[8]         // event type
		switch s[8] {
		case eventTypeClock:
			d, errno := e.clockTimeout(s[16:])
			if errno != errnoSuccess {
				le.PutUint16(ev[8:], errno)
				immediate = true
			} else if wait < 0 || d < wait {
				wait = d
			}
		case eventTypeFdRead, eventTypeFdWrite:
			le.PutUint16(ev[8:], errnoNotsup)
			immediate = true
		default:
			return errnoInval
		}
		nevents++
	}
	if !immediate && wait > 0 {
		sleep(ctx, wait)
	}
	if !mem.WriteUint32Le(resultPtr, nevents) {
		return errnoFault
	}
	return errnoSuccess
}

// clockTimeout turns a subscription_clock into a relative duration.
func (e *Engine) clockTimeout(c []byte) (time.Duration, uint16) {
	le := binary.LittleEndian
	id := le.Uint32(c[0:4])
	timeout := int64(le.Uint64(c[8:16]))
	flags := le.Uint16(c[24:26])
	if flags&flagAbstime == 0 {
		return time.Duration(timeout), errnoSuccess
	}
	switch id {
	case clockMonotonic:
		return time.Duration(timeout - e.nanotime()), errnoSuccess
	case clockRealtime:
		return time.Until(time.Unix(0, timeout)), errnoSuccess
	default:
		return 0, errnoInval
	}
}
