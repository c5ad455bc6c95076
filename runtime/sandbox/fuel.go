package sandbox

// fuelReserve is the fuel an execution gets after exhausting its own to
// unwind from the KeyboardInterrupt that stops it (finally blocks, the
// runtime's error report). It is fixed, so that what happens after
// exhaustion is as deterministic as what happened before: code that is
// still running when the reserve is gone too is stopped hard.
const fuelReserve = 1 << 22

// fuelMeter counts the fuel of one execution. The preemption countdown is
// decremented once per executed loop head and the hook is called when it
// reaches zero, so the fuel consumed is what was handed to the countdown
// minus what is left in it. The countdown is refilled with at most
// preemptBudget at a time and never beyond the limit, so the hook runs
// exactly when the limit is reached. Guarded by Sandbox.preemptMu.
type fuelMeter struct {
	limit     uint64 // units allowed, the reserve included once exhausted
	given     uint64 // units handed to the countdown so far
	exhausted bool   // the limit was reached; the reserve is in use
}

// consumed is the fuel used given the countdown's current value, which is
// negative when checks ran after it was zeroed.
func (f *fuelMeter) consumed(countdown int32) uint64 {
	return f.given - uint64(int64(countdown))
}

// refill returns the countdown's next value: up to preemptBudget, never
// beyond the limit, 0 when it is exceeded. An execution may use exactly
// limit units: the check that would be unit limit+1 calls the hook and
// finds nothing left.
func (f *fuelMeter) refill(countdown int32) int32 {
	used := f.consumed(countdown)
	var left uint64
	if used <= f.limit {
		left = f.limit + 1 - used
	}
	n := min(left, preemptBudget)
	f.given = used + n
	return int32(n)
}

// countdownValue reads the i32 countdown global (wazero hands it out as
// the low 32 bits of a uint64).
func countdownValue(g interface{ Get() uint64 }) int32 { return int32(uint32(g.Get())) }

// startFuel arms the countdown for an execution with the given limit.
func (sb *Sandbox) startFuel(st *execState, limit uint64) {
	sb.preemptMu.Lock()
	defer sb.preemptMu.Unlock()
	st.fuel = fuelMeter{limit: limit}
	if sb.countdown != nil {
		sb.countdown.Set(uint64(st.fuel.refill(0)))
	}
}

// fuelConsumed reports the fuel an execution used so far.
func (sb *Sandbox) fuelConsumed(st *execState) uint64 {
	sb.preemptMu.Lock()
	defer sb.preemptMu.Unlock()
	if sb.countdown == nil {
		return 0
	}
	return st.fuel.consumed(countdownValue(sb.countdown))
}
