package sandbox

import (
	"fmt"
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
	// shrinkTo, while set, is the length the next Reallocate returns,
	// whatever is asked: how a reset takes the memory back to the image's
	// size (wazero has no shrink, but takes the length of what Reallocate
	// returns as the memory's size).
	shrinkTo atomic.Uint64

	// In-place resets (nil tracker: none).
	tracker *dirtyTracker
	scan    *scanBuf
	regions []pageRegion
	resets  resetStats
}

// residentTail is how much memory above the image a reset zeroes in place
// (keeping the pages resident for the next job); written pages beyond it
// are given back to the kernel, so that one large job does not leave an
// idle slot holding its peak.
const residentTail = 4 << 20

// resetStats counts what in-place resets did, for benchmarks and tests.
type resetStats struct {
	Resets        int64 // in-place resets
	PagesRestored int64 // image pages copied back
	PagesZeroed   int64 // pages above the image zeroed in place
	PagesDropped  int64 // pages above the image given back to the kernel
}

// setLimit narrows the growth limit for the next execution, up to the
// reservation (memory already in use is not taken back).
func (m *guestMemory) setLimit(n uint64) {
	m.limit.Store(min(n, uint64(len(m.mapping))))
}

func (m *guestMemory) Reallocate(size uint64) []byte {
	if n := m.shrinkTo.Load(); n != 0 {
		m.size.Store(n)
		return m.mapping[:n:n]
	}
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

// restoreDirty returns the memory to the image in place: the pages written
// since the last reset (or creation) are found with the kernel's write
// tracking, image pages among them are copied back from the image, pages
// above it zeroed or dropped, and all of them write-protected again so the
// next job's writes are seen. Pages stay mapped and, mostly, resident.
func (m *guestMemory) restoreDirty() error {
	top := int(m.size.Load())
	regs, err := m.tracker.written(m.mapping, 0, top, m.scan, m.regions[:0])
	m.regions = regs
	if err != nil {
		return err
	}
	img := m.image
	keep := img.size + residentTail
	for _, r := range regs {
		s, e := int(r.start), int(r.end)
		if s < img.size {
			ce := min(e, img.size)
			copy(m.mapping[s:ce], img.view[s:ce])
			m.resets.PagesRestored += int64(ce-s) / pageSize
			s = ce
		}
		if s < e && s < keep {
			ce := min(e, keep)
			clear(m.mapping[s:ce])
			m.resets.PagesZeroed += int64(ce-s) / pageSize
			s = ce
		}
		if s < e {
			if err := unix.Madvise(m.mapping[s:e], unix.MADV_DONTNEED); err != nil {
				return fmt.Errorf("sandbox: reset: dropping pages: %w", err)
			}
			m.resets.PagesDropped += int64(e-s) / pageSize
		}
	}
	m.resets.Resets++
	return m.tracker.protect(m.mapping, 0, top, false)
}

// pageSize is the kernel's page size, the granularity of write tracking.
var pageSize = int64(unix.Getpagesize())

// memoryAllocator hands out a guestMemory reservation of a fixed limit, with
// the image (if any) mapped at its start, and remembers it so the sandbox
// can read its statistics.
type memoryAllocator struct {
	limit   uint64
	image   *memoryImage
	tracker *dirtyTracker // nil: no in-place resets
	mem     *guestMemory
	err     error
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
	if a.tracker != nil {
		// Everything is the image (or zero) now: track writes from here.
		m.tracker, m.scan = a.tracker, newScanBuf()
		err := a.tracker.register(b)
		if err == nil {
			err = a.tracker.protect(b, 0, a.image.size, true)
		}
		if err != nil {
			_ = unix.Munmap(b)
			a.err = err
			return &guestMemory{}
		}
	}
	a.mem = m
	return m
}
