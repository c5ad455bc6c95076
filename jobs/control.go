package jobs

// Bounds of the control stream (cancel requests). It is written by
// clients, so a flood must stay within a fixed size: one message per job
// (MaxMsgsPerSubject), at most ControlLimits.MaxMsgs and MaxBytes in all,
// each at most ControlMaxMsgSize; past them the oldest cancels go.
const (
	DefaultControlMaxMsgs  = 50_000
	DefaultControlMaxBytes = 16 << 20
	// ControlMaxMsgSize bounds one cancel request (a reason of a few
	// hundred bytes fits).
	ControlMaxMsgSize = 4 << 10
)

// ControlLimits bound the control stream. Zero fields take the defaults.
type ControlLimits struct {
	MaxMsgs  int64
	MaxBytes int64
}

func (l ControlLimits) maxMsgs() int64 {
	if l.MaxMsgs <= 0 {
		return DefaultControlMaxMsgs
	}
	return l.MaxMsgs
}

func (l ControlLimits) maxBytes() int64 {
	if l.MaxBytes <= 0 {
		return DefaultControlMaxBytes
	}
	return l.MaxBytes
}
