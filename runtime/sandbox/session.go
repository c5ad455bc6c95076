package sandbox

import (
	"context"
	"errors"
	"fmt"
)

// DefaultSnapshotBytes caps a session snapshot.
const DefaultSnapshotBytes = 10 << 20

// ErrSnapshotTooLarge: the session state exceeds the snapshot cap.
var ErrSnapshotTooLarge = errors.New("sandbox: session snapshot too large")

// ErrSessionOp: a session operation failed inside the guest.
var ErrSessionOp = errors.New("sandbox: session operation failed")

// SkippedVariable names session state a snapshot or restore could not carry.
type SkippedVariable struct {
	Name   string `json:"name"`
	Reason string `json:"reason"`
}

// StateSnapshot is a session's user globals, serialised. Data restores into
// any sandbox of the same runtime build, in this process or another.
type StateSnapshot struct {
	Data []byte
	// Skipped lists the variables that could not be serialised (open files,
	// generators, locks...), so callers can tell the user what was lost.
	Skipped []SkippedVariable
}

// sessionLimits: session operations run no user code, but unpickling can
// still take time and memory; they get the sandbox's limits.
func (sb *Sandbox) sessionOp(ctx context.Context, input []byte, flags uint32, extra map[string]any, pkgs []*Package) (*Result, *execState, error) {
	lim := mergeLimits(sb.limits, Limits{})
	if extra == nil {
		extra = map[string]any{}
	}
	var paths []string
	for _, p := range pkgs {
		paths = append(paths, p.File())
	}
	extra["packages"] = paths
	res, st, err := sb.exec(ctx, input, flags, lim, &ExecOptions{Packages: pkgs}, extra)
	if err != nil {
		return res, st, err
	}
	if res.Status != StatusOK {
		if res.Error != nil && res.Error.Type == "MemoryError" && flags&flagSnapshot != 0 {
			return res, st, fmt.Errorf("%w: %s", ErrSnapshotTooLarge, res.Error.Message)
		}
		msg := string(res.Status)
		if res.Error != nil {
			msg = res.Error.Error()
		}
		return res, st, fmt.Errorf("%w: %s", ErrSessionOp, msg)
	}
	return res, st, nil
}

// SnapshotState serialises the session namespace (what executions with
// ExecOptions.Session built up). maxBytes caps the snapshot (0: default).
func (sb *Sandbox) SnapshotState(ctx context.Context, maxBytes int) (*StateSnapshot, error) {
	if maxBytes <= 0 {
		maxBytes = DefaultSnapshotBytes
	}
	res, st, err := sb.sessionOp(ctx, nil, flagSnapshot, map[string]any{"max_bytes": maxBytes}, sb.pkgs.current())
	if err != nil {
		return nil, err
	}
	if len(st.snapshot) > maxBytes {
		return nil, fmt.Errorf("%w: %d bytes, limit %d", ErrSnapshotTooLarge, len(st.snapshot), maxBytes)
	}
	return &StateSnapshot{Data: st.snapshot, Skipped: res.skipped}, nil
}

// RestoreState replaces the session namespace with a snapshot's contents.
// Variables that cannot be restored are returned, not silently dropped.
// pkgs are the packages the state's objects come from, if any.
func (sb *Sandbox) RestoreState(ctx context.Context, data []byte, pkgs ...*Package) ([]SkippedVariable, error) {
	if len(data) == 0 {
		return nil, fmt.Errorf("%w: empty snapshot", ErrSessionOp)
	}
	res, _, err := sb.sessionOp(ctx, data, flagRestore, nil, pkgs)
	if err != nil {
		return nil, err
	}
	return res.skipped, nil
}

// ClearState empties the session namespace; imports stay cached.
func (sb *Sandbox) ClearState(ctx context.Context) error {
	_, _, err := sb.sessionOp(ctx, nil, flagClear, nil, nil)
	return err
}
