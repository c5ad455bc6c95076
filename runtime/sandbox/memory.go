package sandbox

import (
	"sync/atomic"

	"github.com/tetratelabs/wazero/experimental"
	"golang.org/x/sys/unix"
)

// guestMemory backs one sandbox's linear memory with a private mapping
// reserved up to the sandbox's memory ceiling. Growing is a reslice (no
// copy; the kernel commits pages lazily), and refusing to grow past the
// limit makes memory.grow return -1, which CPython's allocator turns into a
// MemoryError instead of a crash.
//
// Its first pages map the engine's pre-initialised image copy-on-write, so
// a new sandbox shares the image with every other until it writes a page.
type guestMemory struct {
	mapping []byte // the whole reservation: the sandbox's memory ceiling
	image   *memoryImage
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

// reset returns the memory to the image: the image pages are mapped afresh
// (dropping the sandbox's private copies) and the rest is zeroed.
func (m *guestMemory) reset() error {
	if err := m.image.mapInto(m.mapping); err != nil {
		return err
	}
	if rest := m.mapping[m.image.size:m.size.Load()]; len(rest) > 0 {
		return unix.Madvise(rest, unix.MADV_DONTNEED)
	}
	return nil
}

// memoryAllocator hands out a guestMemory reservation of a fixed limit, with
// the image (if any) mapped at its start, and remembers it so the sandbox
// can read its statistics.
type memoryAllocator struct {
	limit uint64
	image *memoryImage
	mem   *guestMemory
	err   error
}

func (a *memoryAllocator) Allocate(capacity, maxSize uint64) experimental.LinearMemory {
	limit := min(a.limit, maxSize)
	limit = max(limit, capacity)
	// MAP_NORESERVE: reserving the limit costs address space, not memory.
	b, err := unix.Mmap(-1, 0, int(limit), unix.PROT_READ|unix.PROT_WRITE,
		unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_NORESERVE)
	if err != nil {
		a.err = err
		// wazero treats a nil buffer as an allocation failure.
		return &guestMemory{}
	}
	m := &guestMemory{mapping: b, image: a.image}
	m.limit.Store(limit)
	if a.image != nil {
		if err := a.image.mapInto(b); err != nil {
			_ = unix.Munmap(b)
			a.err = err
			return &guestMemory{}
		}
	}
	a.mem = m
	return m
}
