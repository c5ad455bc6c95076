package worker

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/eryx-dev/eryx/internal/objread"
	"github.com/eryx-dev/eryx/jobs"
	"github.com/eryx-dev/eryx/runtime/sandbox"
)

// packageCacheSize bounds the prepared packages a worker keeps. Packages
// are keyed by object and content digest, so a re-uploaded package is
// fetched anew.
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

// resolve returns the packages a job of tenant names: each is the
// tenant's object "<tenant>/<name>" if there is one, else the platform's
// "_platform/<name>". A reference pinned by SHA-256 gets exactly that
// content or a package_mismatch rejection; the hash is checked on the
// bytes read, never taken from the object's info (the uploader's word).
func (c *packageCache) resolve(ctx context.Context, tenant string, refs []string, bucket string) ([]*sandbox.Package, error) {
	if len(refs) == 0 {
		return nil, nil
	}
	pkgs := make([]*sandbox.Package, 0, len(refs))
	for _, raw := range refs {
		ref, err := jobs.ParsePackageRef(raw)
		if err != nil {
			return nil, err
		}
		obj, info, err := c.lookup(ctx, tenant, ref.Name)
		if errors.Is(err, jetstream.ErrObjectNotFound) {
			return nil, reject(jobs.CodeUnknownPackage, "package %q is neither %s's nor the platform's (bucket %s)", ref.Name, tenant, bucket)
		}
		if err != nil {
			return nil, fmt.Errorf("worker: looking up package %q: %w", ref.Name, err)
		}
		// The cache key names the object (so a tenant never gets another
		// tenant's package from the cache) and its content: the pin, or
		// the digest the info claims (a re-upload is fetched anew).
		key := obj + "@" + info.Digest
		if ref.SHA256 != "" {
			key = obj + "@sha256:" + ref.SHA256
			if d := digestOf(ref.SHA256); d != "" && info.Digest != d {
				return nil, reject(jobs.CodePackageMismatch, "package %q (%s) has digest %s, the job pins sha256:%s", ref.Name, obj, info.Digest, ref.SHA256)
			}
		}
		c.mu.Lock()
		p := c.entries[key]
		c.mu.Unlock()
		if p == nil {
			// The info is the uploader's word: objread checks it before
			// fetching and bounds the read whatever it says.
			data, err := objread.Read(ctx, c.store, obj, c.limit)
			if errors.Is(err, objread.ErrTooLarge) {
				if c.onTooLarge != nil {
					c.onTooLarge()
				}
				return nil, reject(jobs.CodeBadPackage, "package %q is larger than the %d-byte limit", ref.Name, c.limit)
			}
			if errors.Is(err, jetstream.ErrDigestMismatch) {
				// Content that is not what its info says: forged, or
				// replaced while read. Retrying would loop on it.
				code := jobs.CodeBadPackage
				if ref.SHA256 != "" {
					code = jobs.CodePackageMismatch
				}
				return nil, reject(code, "package %q (%s): its content does not match its digest", ref.Name, obj)
			}
			if err != nil {
				return nil, fmt.Errorf("worker: fetching package %q: %w", ref.Name, err)
			}
			if ref.SHA256 != "" {
				sum := sha256.Sum256(data)
				if got := hex.EncodeToString(sum[:]); got != ref.SHA256 {
					return nil, reject(jobs.CodePackageMismatch, "package %q (%s) has content sha256:%s, the job pins sha256:%s", ref.Name, obj, got, ref.SHA256)
				}
			}
			p, err = sandbox.NewPackage(ref.Name, data)
			if err != nil {
				return nil, reject(jobs.CodeBadPackage, "%v", err)
			}
			c.put(key, p)
		}
		pkgs = append(pkgs, p)
	}
	return pkgs, nil
}

// lookup finds the object of tenant's package name: its own, else the
// platform's.
func (c *packageCache) lookup(ctx context.Context, tenant, name string) (string, *jetstream.ObjectInfo, error) {
	obj := jobs.PackageObject(tenant, name)
	info, err := c.store.GetInfo(ctx, obj)
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		obj = jobs.PackageObject(jobs.PlatformTenant, name)
		info, err = c.store.GetInfo(ctx, obj)
	}
	return obj, info, err
}

// digestOf is the object store's digest of a hex SHA-256 ("SHA-256=" and
// base64url), "" if hexSum is not hex.
func digestOf(hexSum string) string {
	b, err := hex.DecodeString(hexSum)
	if err != nil {
		return ""
	}
	return "SHA-256=" + base64.URLEncoding.EncodeToString(b)
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
