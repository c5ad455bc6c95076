package worker

// CancelStats exposes the cancel registry's size and drops to tests.
func (w *Worker) CancelStats() (remembered int, dropped uint64) { return w.cancels.stats() }

// WarmSessions exposes the warm sessions' count and memory to tests.
func (w *Worker) WarmSessions() (sessions int, bytes uint64) { return w.sessions.warmMemory() }
