package worker

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/eryx-dev/eryx/internal/objread"
	"github.com/eryx-dev/eryx/jobs"
	"github.com/eryx-dev/eryx/runtime/sandbox"
)

// packageCacheSize bounds the prepared packages a worker keeps. Packages
// are keyed by content digest, so a re-uploaded package is fetched anew.
const packageCacheSize = 32

// packageCache resolves package names to prepared runtime packages from
// the packages object store.
type packageCache struct {
	store jetstream.ObjectStore
	limit int64 // bytes of one package
	// onTooLarge is told of each package refused for its size.
	onTooLarge func()

	mu      sync.Mutex
	entries map[string]*sandbox.Package // by name@digest
	order   []string                    // oldest first
}

func newPackageCache(store jetstream.ObjectStore, limit int64) *packageCache {
	return &packageCache{store: store, limit: limit, entries: make(map[string]*sandbox.Package)}
}

// resolve returns the packages named, or a rejection for one that is not
// in the bucket or that the runtime cannot use.
func (c *packageCache) resolve(ctx context.Context, names []string, bucket string) ([]*sandbox.Package, error) {
	if len(names) == 0 {
		return nil, nil
	}
	pkgs := make([]*sandbox.Package, 0, len(names))
	for _, name := range names {
		info, err := c.store.GetInfo(ctx, name)
		if errors.Is(err, jetstream.ErrObjectNotFound) {
			return nil, reject(jobs.CodeUnknownPackage, "package %q is not in bucket %s", name, bucket)
		}
		if err != nil {
			return nil, fmt.Errorf("worker: looking up package %q: %w", name, err)
		}
		key := name + "@" + info.Digest
		c.mu.Lock()
		p := c.entries[key]
		c.mu.Unlock()
		if p == nil {
			// The info is the uploader's word: objread checks it before
			// fetching and bounds the read whatever it says.
			data, err := objread.Read(ctx, c.store, name, c.limit)
			if errors.Is(err, objread.ErrTooLarge) {
				if c.onTooLarge != nil {
					c.onTooLarge()
				}
				return nil, reject(jobs.CodeBadPackage, "package %q is larger than the %d-byte limit", name, c.limit)
			}
			if err != nil {
				return nil, fmt.Errorf("worker: fetching package %q: %w", name, err)
			}
			p, err = sandbox.NewPackage(name, data)
			if err != nil {
				return nil, reject(jobs.CodeBadPackage, "%v", err)
			}
			c.put(key, p)
		}
		pkgs = append(pkgs, p)
	}
	return pkgs, nil
}

func (c *packageCache) put(key string, p *sandbox.Package) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.entries[key]; ok {
		return
	}
	c.entries[key] = p
	c.order = append(c.order, key)
	for len(c.order) > packageCacheSize {
		delete(c.entries, c.order[0])
		c.order = c.order[1:]
	}
}
