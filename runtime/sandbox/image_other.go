//go:build !linux

package sandbox

// memoryImage is the pre-initialised linear memory. Without memfd, each
// sandbox gets a copy.
type memoryImage struct {
	data []byte
	size int
}

func newMemoryImage(b []byte) (*memoryImage, error) { return &memoryImage{data: b, size: len(b)}, nil }

func (im *memoryImage) mapInto(dst []byte) error {
	copy(dst, im.data)
	return nil
}

func (im *memoryImage) close() error { return nil }
