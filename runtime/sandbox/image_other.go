//go:build !linux

package sandbox

import "errors"

// memoryImage is the pre-initialised linear memory. Without memfd, each
// sandbox gets a copy.
type memoryImage struct {
	data []byte
	size int
	view []byte
}

func newMemoryImage(b []byte) (*memoryImage, error) {
	return &memoryImage{data: b, size: len(b), view: b}, nil
}

func (im *memoryImage) mapInto(dst []byte) error {
	copy(dst, im.data)
	return nil
}

func (im *memoryImage) close() error { return nil }

// dirtyTracker: without Linux's write tracking, slots are rebuilt per job.
type dirtyTracker struct{}

type pageRegion struct{ start, end, categories uint64 }

type scanBuf [1]pageRegion

func newScanBuf() *scanBuf { return new(scanBuf) }

func newDirtyTracker() (*dirtyTracker, error) {
	return nil, errors.New("dirty-page tracking needs Linux 6.7+ (userfaultfd, PAGEMAP_SCAN)")
}

func (t *dirtyTracker) register([]byte) error { return errors.ErrUnsupported }

func (t *dirtyTracker) written([]byte, int, int, *scanBuf, []pageRegion) ([]pageRegion, error) {
	return nil, errors.ErrUnsupported
}

func (t *dirtyTracker) protect([]byte, int, int, bool) error { return errors.ErrUnsupported }

func (t *dirtyTracker) close() error { return nil }
