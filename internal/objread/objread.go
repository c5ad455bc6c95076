// Package objread reads JetStream objects without trusting their size:
// the object's info is checked against the limit before anything is
// fetched, and the chunks are read through a bounded reader, because the
// info is written by whoever uploaded the object and may lie.
package objread

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/nats-io/nats.go/jetstream"
)

// ErrTooLarge is returned for an object above the limit, whatever its
// info claims.
var ErrTooLarge = errors.New("object too large")

// Read returns the object's bytes if there are at most limit of them. It
// fails with ErrTooLarge, before fetching, when the object's info says it
// is larger, and while reading as soon as more than limit bytes arrive;
// at most limit+1 bytes are ever buffered (plus what the client has in
// flight for the subscription).
func Read(ctx context.Context, store jetstream.ObjectStore, name string, limit int64) ([]byte, error) {
	info, err := store.GetInfo(ctx, name)
	if err != nil {
		return nil, err
	}
	if info.Size > uint64(limit) {
		return nil, fmt.Errorf("%w: %s is %d bytes, the limit is %d", ErrTooLarge, name, info.Size, limit)
	}
	res, err := store.Get(ctx, name)
	if err != nil {
		return nil, err
	}
	defer func() { _ = res.Close() }() // an early stop ends the fetch
	var buf bytes.Buffer
	buf.Grow(int(info.Size)) // at most limit, checked above
	n, err := io.Copy(&buf, io.LimitReader(res, limit+1))
	switch {
	case n > limit:
		return nil, fmt.Errorf("%w: %s has more than %d bytes (its info says %d)", ErrTooLarge, name, limit, info.Size)
	case err != nil:
		return nil, fmt.Errorf("reading object %s: %w", name, err)
	case uint64(n) != info.Size:
		return nil, fmt.Errorf("reading object %s: %d bytes, its info says %d", name, n, info.Size)
	}
	return buf.Bytes(), nil
}

// ErrChanged is returned when an object is no longer the one expected:
// it was replaced (another size or digest) since its info was checked.
var ErrChanged = errors.New("object changed")

// ReadExpect returns the object's bytes if it still has exactly the size
// and digest given (from an info checked earlier). At most size+1 bytes
// are buffered, whatever the object's chunks hold; the store verifies the
// digest of what was read (jetstream.ErrDigestMismatch).
func ReadExpect(ctx context.Context, store jetstream.ObjectStore, name string, size uint64, digest string) ([]byte, error) {
	res, err := store.Get(ctx, name)
	if err != nil {
		return nil, err
	}
	defer func() { _ = res.Close() }()
	info, err := res.Info()
	if err != nil {
		return nil, err
	}
	if info.Size != size || info.Digest != digest {
		return nil, fmt.Errorf("%w: %s is %d bytes (%s), expected %d (%s)", ErrChanged, name, info.Size, info.Digest, size, digest)
	}
	buf := make([]byte, 0, size)
	w := bytes.NewBuffer(buf)
	n, err := io.Copy(w, io.LimitReader(res, int64(size)+1)) //nolint:gosec // size is bounded by the caller's limit
	switch {
	case err != nil:
		return nil, fmt.Errorf("reading object %s: %w", name, err)
	case uint64(n) != size: //nolint:gosec // n >= 0
		return nil, fmt.Errorf("%w: %s has %d bytes, its info says %d", ErrChanged, name, n, size)
	}
	return w.Bytes(), nil
}
