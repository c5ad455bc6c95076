package sandbox

import (
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// memoryImage is the pre-initialised linear memory, held in a memfd so that
// every sandbox can map it copy-on-write instead of copying 10+ MiB.
type memoryImage struct {
	fd   int
	size int
	view []byte // read-only shared mapping: the source of in-place resets
}

func newMemoryImage(b []byte) (*memoryImage, error) {
	if len(b)%unix.Getpagesize() != 0 {
		return nil, fmt.Errorf("sandbox: image of %d bytes is not page-aligned", len(b))
	}
	fd, err := unix.MemfdCreate("eryx-image", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return nil, fmt.Errorf("sandbox: memfd for the image: %w", err)
	}
	for off := 0; off < len(b); {
		n, err := unix.Pwrite(fd, b[off:], int64(off))
		if err != nil {
			_ = unix.Close(fd)
			return nil, fmt.Errorf("sandbox: writing the image: %w", err)
		}
		off += n
	}
	// Sealed: no sandbox (or bug) can change the image all others map.
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS,
		unix.F_SEAL_WRITE|unix.F_SEAL_SHRINK|unix.F_SEAL_GROW|unix.F_SEAL_SEAL); err != nil {
		_ = unix.Close(fd)
		return nil, fmt.Errorf("sandbox: sealing the image: %w", err)
	}
	view, err := unix.Mmap(fd, 0, len(b), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		_ = unix.Close(fd)
		return nil, fmt.Errorf("sandbox: mapping the image read-only: %w", err)
	}
	return &memoryImage{fd: fd, size: len(b), view: view}, nil
}

// mapInto maps the image copy-on-write over the start of dst, which must be
// a mapping at least as large as the image.
func (im *memoryImage) mapInto(dst []byte) error {
	if len(dst) < im.size {
		return fmt.Errorf("sandbox: %d-byte memory is smaller than the %d-byte image", len(dst), im.size)
	}
	addr := uintptr(unsafe.Pointer(unsafe.SliceData(dst)))
	_, _, errno := unix.Syscall6(unix.SYS_MMAP, addr, uintptr(im.size), unix.PROT_READ|unix.PROT_WRITE,
		unix.MAP_PRIVATE|unix.MAP_FIXED, uintptr(im.fd), 0)
	if errno != 0 {
		return fmt.Errorf("sandbox: mapping the image: %w", errno)
	}
	return nil
}

func (im *memoryImage) close() error {
	_ = unix.Munmap(im.view)
	return unix.Close(im.fd)
}
