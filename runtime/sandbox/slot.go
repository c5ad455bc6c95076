package sandbox

import (
	"context"
	"errors"
	"fmt"

	"github.com/tetratelabs/wazero/api"
)

// ErrResetFailed: a sandbox could not be returned to its initial state; it
// has been closed.
var ErrResetFailed = errors.New("sandbox: reset failed")

// savedGlobal is a mutable global and its value right after creation.
type savedGlobal struct {
	g api.MutableGlobal
	v uint64
}

// recordInitialState saves what Reset returns to besides memory: the
// mutable globals and wazero's file table.
func (sb *Sandbox) recordInitialState() error {
	for _, name := range sb.eng.globals {
		g, ok := sb.mod.ExportedGlobal(name).(api.MutableGlobal)
		if !ok {
			return fmt.Errorf("sandbox: global %s is not a mutable export", name)
		}
		sb.globals = append(sb.globals, savedGlobal{g: g, v: g.Get()})
	}
	fds, err := newFDTable(sb.mod)
	sb.fds = fds
	return err
}

// Reusable reports whether the sandbox may serve another job after Reset:
// it is open, and its last job did not exceed the memory limit (a slot
// whose job trapped, crashed or was stopped hard is closed already).
func (sb *Sandbox) Reusable() bool {
	sb.mu.Lock()
	defer sb.mu.Unlock()
	return !sb.closed && sb.spent == ""
}

// Reset returns the sandbox to the state it had when it was created, as if
// it were a new one: nothing of earlier executions survives. With in-place
// resets (Engine.SlotReset) the instance is kept: the memory pages the jobs
// wrote are copied back from the image, the memory shrinks back to the
// image's size, the mutable globals get their saved values, files left
// open are closed, /tmp, /output and the packages are emptied. Otherwise
// the image is mapped afresh over the memory. If anything cannot be put
// back, the sandbox is closed and the error wraps ErrResetFailed.
func (sb *Sandbox) Reset(ctx context.Context) error {
	sb.mu.Lock()
	defer sb.mu.Unlock()
	if sb.closed {
		return ErrSandboxClosed
	}
	if err := sb.resetLocked(); err != nil {
		_ = sb.closeLocked(ctx)
		return fmt.Errorf("%w: %w", ErrResetFailed, err)
	}
	return nil
}

func (sb *Sandbox) resetLocked() error {
	// Host side first: the files, so that no handle outlives the reset.
	if sb.fds == nil {
		return errFDTable
	}
	if err := sb.fds.reset(); err != nil {
		return err
	}
	sb.tmp.Clear()
	sb.pkgs.set(nil)
	sb.data.clear()
	sb.out.reset(0, 0)
	// Linear memory: contents, then size.
	if sb.mem.tracker != nil {
		if err := sb.mem.restoreDirty(); err != nil {
			return err
		}
	} else if err := sb.mem.reset(); err != nil {
		return err
	}
	if err := sb.shrinkMemory(); err != nil {
		return err
	}
	sb.mem.setLimit(sb.limits.MemoryBytes)
	sb.mem.failed.Store(false)
	for _, g := range sb.globals {
		g.g.Set(g.v)
	}
	sb.spent = ""
	return sb.restore()
}

// shrinkMemory takes the memory's size back to the image's. wazero cannot
// shrink a memory, but it takes the length of what the allocator returns
// for a grow as the new size, and tells the compiled code.
func (sb *Sandbox) shrinkMemory() error {
	mem := sb.mod.Memory()
	want := uint64(sb.eng.image.size)
	if uint64(mem.Size()) == want {
		return nil
	}
	sb.mem.shrinkTo.Store(want)
	_, ok := mem.Grow(1)
	sb.mem.shrinkTo.Store(0)
	if !ok || uint64(mem.Size()) != want {
		return fmt.Errorf("sandbox: reset: memory is %d bytes, not the image's %d", mem.Size(), want)
	}
	return nil
}
