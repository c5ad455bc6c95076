package sandbox

import (
	"errors"
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Dirty-page tracking with userfaultfd's asynchronous write protection and
// the PAGEMAP_SCAN ioctl (Linux 6.7+). Once a range is registered with a
// userfaultfd in WP_ASYNC mode, the kernel resolves a write to a
// write-protected page by itself (no handler thread) and clears the page's
// protection bit; PAGEMAP_SCAN then lists the pages whose bit is clear, the
// pages written since they were last protected, and can protect them again
// in the same page-table walk. Unlike soft-dirty bits (cleared for the whole
// process at once through /proc/self/clear_refs), the state is per range,
// so slots reset independently while others run.

// From <linux/userfaultfd.h> and <linux/fs.h>; golang.org/x/sys has neither.
const (
	uffdAPI                     = 0xaa
	uffdUserModeOnly            = 1 // unprivileged processes may only ask for user-mode faults
	uffdFeatureWPHugetlbfsShmem = 1 << 12
	uffdFeatureWPAsync          = 1 << 15
	uffdioAPI                   = 0xc018aa3f // _IOWR(0xaa, 0x3f, struct uffdio_api)
	uffdioRegister              = 0xc020aa00 // _IOWR(0xaa, 0x00, struct uffdio_register)
	uffdioRegisterModeWP        = 1 << 1
	pagemapScan                 = 0xc0606610 // _IOWR('f', 16, struct pm_scan_arg)
	pmScanWPMatching            = 1 << 0
	pmScanCheckWPAsync          = 1 << 1
	pageIsWritten               = 1 << 1
	pageIsPFNZero               = 1 << 5
)

type uffdioAPIArg struct{ api, features, ioctls uint64 }

type uffdioRegisterArg struct{ start, len, mode, ioctls uint64 }

type pmScanArg struct {
	size, flags, start, end, walkEnd, vec, vecLen, maxPages       uint64
	categoryInverted, categoryMask, categoryAnyofMask, returnMask uint64
}

type pageRegion struct{ start, end, categories uint64 }

// dirtyTracker is the engine's handle on the kernel's write tracking: one
// userfaultfd that every slot's memory is registered with, and the
// process's pagemap to scan them. Its methods are safe for concurrent use
// on distinct ranges.
type dirtyTracker struct {
	uffd    int
	pagemap int
}

// newDirtyTracker opens the tracker, or says why this kernel cannot track
// (the engine then falls back to a new instance per job).
func newDirtyTracker() (*dirtyTracker, error) {
	fd, _, errno := unix.Syscall(unix.SYS_USERFAULTFD, uintptr(unix.O_CLOEXEC|unix.O_NONBLOCK|uffdUserModeOnly), 0, 0)
	if errno != 0 {
		return nil, fmt.Errorf("userfaultfd: %w", errno)
	}
	t := &dirtyTracker{uffd: int(fd), pagemap: -1}
	api := uffdioAPIArg{api: uffdAPI, features: uffdFeatureWPAsync | uffdFeatureWPHugetlbfsShmem}
	if err := ioctlPtr(t.uffd, uffdioAPI, unsafe.Pointer(&api)); err != nil {
		_ = t.close()
		return nil, fmt.Errorf("userfaultfd without asynchronous write protection (Linux 6.7+): %w", err)
	}
	pm, err := unix.Open("/proc/self/pagemap", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		_ = t.close()
		return nil, fmt.Errorf("opening /proc/self/pagemap: %w", err)
	}
	t.pagemap = pm
	if err := t.probe(); err != nil {
		_ = t.close()
		return nil, err
	}
	return t, nil
}

// probe checks on a scratch mapping that a written page is reported, and
// that protecting it again clears the report.
func (t *dirtyTracker) probe() error {
	ps := unix.Getpagesize()
	b, err := unix.Mmap(-1, 0, 4*ps, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return fmt.Errorf("probe mapping: %w", err)
	}
	defer func() { _ = unix.Munmap(b) }()
	if err := t.register(b); err != nil {
		return err
	}
	if err := t.protect(b, 0, len(b), true); err != nil {
		return err
	}
	b[2*ps] = 1
	vec := newScanBuf()
	got, err := t.written(b, 0, len(b), vec, nil)
	if err != nil {
		return err
	}
	if len(got) != 1 || got[0].start != uint64(2*ps) || got[0].end != uint64(3*ps) {
		return fmt.Errorf("PAGEMAP_SCAN reported %v for one written page", got)
	}
	if err := t.protect(b, 0, len(b), false); err != nil {
		return err
	}
	if got, err = t.written(b, 0, len(b), vec, got[:0]); err != nil || len(got) != 0 {
		return fmt.Errorf("PAGEMAP_SCAN after protecting: %v %w", got, err)
	}
	return nil
}

// register starts tracking writes to b (the whole mapping, kept until it is
// unmapped).
func (t *dirtyTracker) register(b []byte) error {
	// Huge pages would make every write dirty 2 MiB.
	_ = unix.Madvise(b, unix.MADV_NOHUGEPAGE)
	reg := uffdioRegisterArg{start: uint64(addrOf(b)), len: uint64(len(b)), mode: uffdioRegisterModeWP}
	if err := ioctlPtr(t.uffd, uffdioRegister, unsafe.Pointer(&reg)); err != nil {
		return fmt.Errorf("registering guest memory for write tracking: %w", err)
	}
	return nil
}

// scanBuf receives PAGEMAP_SCAN's regions. The kernel gets its address as
// an integer, so it must be on the heap, where Go never moves objects (a
// goroutine's stack can move).
type scanBuf [256]pageRegion

//go:noinline
func newScanBuf() *scanBuf { return new(scanBuf) }

// written appends to out the regions of b[from:to] written since they were
// last protected, as offsets into b. Pages that only map the shared zero
// page read as zero and are left out.
func (t *dirtyTracker) written(b []byte, from, to int, vec *scanBuf, out []pageRegion) ([]pageRegion, error) {
	base := uint64(addrOf(b))
	start, end := base+uint64(from), base+uint64(to)
	for start < end {
		arg := pmScanArg{
			size: uint64(unsafe.Sizeof(pmScanArg{})), flags: pmScanCheckWPAsync,
			start: start, end: end,
			vec: uint64(uintptr(unsafe.Pointer(&vec[0]))), vecLen: uint64(len(vec)),
			categoryInverted: pageIsPFNZero, categoryMask: pageIsWritten | pageIsPFNZero,
			returnMask: pageIsWritten,
		}
		n, err := ioctlRet(t.pagemap, pagemapScan, unsafe.Pointer(&arg))
		if err != nil {
			return out, fmt.Errorf("PAGEMAP_SCAN: %w", err)
		}
		for _, r := range vec[:n] {
			out = append(out, pageRegion{start: r.start - base, end: r.end - base})
		}
		if arg.walkEnd <= start {
			return out, errors.New("PAGEMAP_SCAN made no progress")
		}
		start = arg.walkEnd
	}
	return out, nil
}

// protect write-protects the written pages of b[from:to] again; with all,
// every page, including those not yet mapped (the kernel leaves a marker
// in their page-table entry, so that reading one later maps it protected
// rather than looking written).
func (t *dirtyTracker) protect(b []byte, from, to int, all bool) error {
	base := uint64(addrOf(b))
	arg := pmScanArg{
		size: uint64(unsafe.Sizeof(pmScanArg{})), flags: pmScanWPMatching | pmScanCheckWPAsync,
		start: base + uint64(from), end: base + uint64(to),
		categoryMask: pageIsWritten, returnMask: pageIsWritten,
	}
	if all {
		arg.categoryMask = 0
	}
	if _, err := ioctlRet(t.pagemap, pagemapScan, unsafe.Pointer(&arg)); err != nil {
		return fmt.Errorf("PAGEMAP_SCAN write-protecting: %w", err)
	}
	if arg.walkEnd != arg.end {
		return fmt.Errorf("PAGEMAP_SCAN stopped write-protecting at %#x of %#x", arg.walkEnd, arg.end)
	}
	return nil
}

func (t *dirtyTracker) close() error {
	var err error
	if t.pagemap >= 0 {
		err = unix.Close(t.pagemap)
	}
	return errors.Join(err, unix.Close(t.uffd))
}

func addrOf(b []byte) uintptr { return uintptr(unsafe.Pointer(unsafe.SliceData(b))) }

func ioctlPtr(fd int, req uintptr, arg unsafe.Pointer) error {
	_, err := ioctlRet(fd, req, arg)
	return err
}

func ioctlRet(fd int, req uintptr, arg unsafe.Pointer) (int, error) {
	r, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), req, uintptr(arg))
	if errno != 0 {
		return 0, errno
	}
	return int(r), nil
}
