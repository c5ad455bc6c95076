package jobs

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/nats-io/nats.go/jetstream"
)

// Files of the client's tenant, in its own files bucket (docs/files.md).
// The bucket is made by workers and eryx-admin, never by a client.

// ErrNoSuchFile: the tenant has no file of that name.
var ErrNoSuchFile = errors.New("jobs: no such file")

// FileInfo describes a file of the tenant.
type FileInfo struct {
	Name        string // in the tenant's bucket
	Size        uint64
	Digest      string // the object store's, "SHA-256=<base64url>"
	ContentType string
}

func (c *Client) filesStore(ctx context.Context) (jetstream.ObjectStore, error) {
	bucket := c.subjects.FilesBucket(c.tenant)
	store, err := c.js.ObjectStore(ctx, bucket)
	if err != nil {
		return nil, fmt.Errorf("jobs: files bucket %s (made by eryx-admin tenant add or the tenant's first job): %w", bucket, err)
	}
	return store, nil
}

func checkName(name string) error {
	if why := ValidFilePath(name); why != "" {
		return fmt.Errorf("jobs: file name %q: %s", name, why)
	}
	return nil
}

// PutFile stores r as the tenant's file name, replacing any.
func (c *Client) PutFile(ctx context.Context, name string, r io.Reader) (*FileInfo, error) {
	if err := checkName(name); err != nil {
		return nil, err
	}
	store, err := c.filesStore(ctx)
	if err != nil {
		return nil, err
	}
	info, err := store.Put(ctx, jetstream.ObjectMeta{Name: name}, r)
	if err != nil {
		return nil, fmt.Errorf("jobs: storing file %s: %w", name, err)
	}
	return fileInfo(info), nil
}

// UploadFile stores a local file under its content address,
// ContentAddressedName(its SHA-256), unless the tenant has it already,
// and returns that name: the same content is uploaded once.
func (c *Client) UploadFile(ctx context.Context, local string) (string, error) {
	f, err := os.Open(local) //nolint:gosec // the caller's own file
	if err != nil {
		return "", err
	}
	defer func() { _ = f.Close() }()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("jobs: reading %s: %w", local, err)
	}
	sum := h.Sum(nil)
	name := ContentAddressedName(hex.EncodeToString(sum))
	store, err := c.filesStore(ctx)
	if err != nil {
		return "", err
	}
	if info, err := store.GetInfo(ctx, name); err == nil &&
		info.Digest == "SHA-256="+base64.URLEncoding.EncodeToString(sum) {
		return name, nil
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return "", err
	}
	// The object store checks nothing; the digest it computes while
	// storing is compared with the name's, so a file that changed
	// between the two reads is not stored under a wrong address.
	info, err := store.Put(ctx, jetstream.ObjectMeta{Name: name}, f)
	if err != nil {
		return "", fmt.Errorf("jobs: uploading %s: %w", local, err)
	}
	if info.Digest != "SHA-256="+base64.URLEncoding.EncodeToString(sum) {
		_ = store.Delete(ctx, name)
		return "", fmt.Errorf("jobs: %s changed while it was uploaded", local)
	}
	return name, nil
}

// GetFile writes the tenant's file name to w; the store verifies its
// digest at the end (jetstream.ErrDigestMismatch).
func (c *Client) GetFile(ctx context.Context, name string, w io.Writer) (*FileInfo, error) {
	if err := checkName(name); err != nil {
		return nil, err
	}
	store, err := c.filesStore(ctx)
	if err != nil {
		return nil, err
	}
	res, err := store.Get(ctx, name)
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		return nil, fmt.Errorf("%w: %s", ErrNoSuchFile, name)
	}
	if err != nil {
		return nil, err
	}
	defer func() { _ = res.Close() }()
	info, err := res.Info()
	if err != nil {
		return nil, err
	}
	if _, err := io.Copy(w, res); err != nil {
		return nil, fmt.Errorf("jobs: reading file %s: %w", name, err)
	}
	return fileInfo(info), nil
}

// ListFiles lists the tenant's files (all names starting with prefix).
func (c *Client) ListFiles(ctx context.Context, prefix string) ([]FileInfo, error) {
	store, err := c.filesStore(ctx)
	if err != nil {
		return nil, err
	}
	infos, err := store.List(ctx)
	if errors.Is(err, jetstream.ErrNoObjectsFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []FileInfo
	for _, info := range infos {
		if strings.HasPrefix(info.Name, prefix) {
			out = append(out, *fileInfo(info))
		}
	}
	return out, nil
}

// DeleteFile removes the tenant's file name.
func (c *Client) DeleteFile(ctx context.Context, name string) error {
	if err := checkName(name); err != nil {
		return err
	}
	store, err := c.filesStore(ctx)
	if err != nil {
		return err
	}
	err = store.Delete(ctx, name)
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		return fmt.Errorf("%w: %s", ErrNoSuchFile, name)
	}
	return err
}

// DownloadOutputs writes the output files res lists into dir (created if
// missing), each at its path, and checks each one's size and SHA-256
// against the result. Only files of the client's tenant and job are
// fetched, and each is written below dir (through os.Root, so neither a
// path nor a symbolic link already in dir can lead outside it). It
// returns the paths written.
func (c *Client) DownloadOutputs(ctx context.Context, res *Result, dir string) ([]string, error) {
	if len(res.Files) == 0 {
		return nil, nil
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, err
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, err
	}
	defer func() { _ = root.Close() }()
	store, err := c.filesStore(ctx)
	if err != nil {
		return nil, err
	}
	var written []string
	for _, f := range res.Files {
		if why := ValidFilePath(f.Path); why != "" || !filepath.IsLocal(filepath.FromSlash(f.Path)) {
			return written, fmt.Errorf("jobs: output path %q is not local: %s", f.Path, why)
		}
		if f.Object != OutputObject(res.ID, f.Path) {
			return written, fmt.Errorf("jobs: output %s names object %q, not one of job %s", f.Path, f.Object, res.ID)
		}
		if err := downloadOne(ctx, store, root, f); err != nil {
			return written, err
		}
		written = append(written, filepath.Join(dir, filepath.FromSlash(f.Path)))
	}
	return written, nil
}

func downloadOne(ctx context.Context, store jetstream.ObjectStore, root *os.Root, f OutputFile) error {
	local := filepath.FromSlash(f.Path)
	if d := filepath.Dir(local); d != "." {
		if err := root.MkdirAll(d, 0o750); err != nil {
			return err
		}
	}
	obj, err := store.Get(ctx, f.Object)
	if err != nil {
		return fmt.Errorf("jobs: output %s: %w", f.Path, err)
	}
	defer func() { _ = obj.Close() }()
	out, err := root.OpenFile(local, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o640)
	if err != nil {
		return err
	}
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(out, h), io.LimitReader(obj, f.Size+1))
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = checkDownload(f, n, h)
	}
	if err != nil {
		_ = root.Remove(local)
		return fmt.Errorf("jobs: output %s: %w", f.Path, err)
	}
	return nil
}

func checkDownload(f OutputFile, n int64, h hash.Hash) error {
	if n != f.Size {
		return fmt.Errorf("%d bytes, the result says %d (overwritten since?)", n, f.Size)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != f.SHA256 {
		return fmt.Errorf("sha256 %s, the result says %s (overwritten since?)", got, f.SHA256)
	}
	return nil
}

func fileInfo(info *jetstream.ObjectInfo) *FileInfo {
	fi := &FileInfo{Name: info.Name, Size: info.Size, Digest: info.Digest}
	if info.Headers != nil {
		fi.ContentType = info.Headers.Get("Content-Type")
	}
	return fi
}
