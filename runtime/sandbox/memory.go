package sandbox

import (
	"sync/atomic"

	"github.com/tetratelabs/wazero/experimental"
	"golang.org/x/sys/unix"
)

// guestMemory backs one sandbox's linear memory with a private anonymous
// mapping reserved up to the sandbox's memory limit. Growing is a reslice
// (no copy, pages are committed lazily by the kernel), and refusing to grow
// past the limit makes memory.grow return -1, which CPython's allocator turns
// into a MemoryError instead of a crash.
type guestMemory struct {
	mapping []byte // the whole reservation: the sandbox's memory ceiling
	limit   atomic.Uint64
	size    atomic.Uint64
	failed  atomic.Bool // a grow was refused at least once
}

// setLimit narrows the growth limit for the next execution, up to the
// reservation (memory already in use is not taken back).
func (m *guestMemory) setLimit(n uint64) {
	m.limit.Store(min(n, uint64(len(m.mapping))))
}

func (m *guestMemory) Reallocate(size uint64) []byte {
	if size > uint64(len(m.mapping)) || size > m.limit.Load() {
		m.failed.Store(true)
		return nil
	}
	m.size.Store(size)
	return m.mapping[:size:size]
}

func (m *guestMemory) Free() {
	if m.mapping != nil {
		_ = unix.Munmap(m.mapping)
		m.mapping = nil
	}
}

// peak is the high-water mark: linear memory never shrinks.
func (m *guestMemory) peak() uint64 { return m.size.Load() }

// memoryAllocator hands out guestMemory reservations of a fixed limit and
// remembers the last one so the sandbox can read its statistics.
type memoryAllocator struct {
	limit uint64
	mem   *guestMemory
	err   error
}

func (a *memoryAllocator) Allocate(capacity, maxSize uint64) experimental.LinearMemory {
	limit := a.limit
	if maxSize < limit {
		limit = maxSize
	}
	if capacity > limit {
		limit = capacity
	}
	// MAP_NORESERVE: reserving the limit costs address space, not memory.
	b, err := unix.Mmap(-1, 0, int(limit), unix.PROT_READ|unix.PROT_WRITE,
		unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_NORESERVE)
	if err != nil {
		a.err = err
		// wazero treats a nil buffer as an allocation failure.
		return &guestMemory{}
	}
	a.mem = &guestMemory{mapping: b}
	a.mem.limit.Store(limit)
	return a.mem
}
