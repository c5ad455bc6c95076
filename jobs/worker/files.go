package worker

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"mime"
	"path"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/eryx-dev/eryx/internal/objread"
	"github.com/eryx-dev/eryx/jobs"
	"github.com/eryx-dev/eryx/runtime/sandbox"
)

// Defaults of the job files' caps (docs/files.md).
const (
	DefaultFileMaxBytes  = 16 << 20 // one input file
	DefaultFilesMaxBytes = 32 << 20 // all input files of a job
	// DefaultFilesStoreTimeout bounds storing a job's output files.
	DefaultFilesStoreTimeout = 30 * time.Second
)

// maxOpenBuckets bounds the files buckets a worker keeps open; beyond it
// the cache starts over (opening a bucket is one request).
const maxOpenBuckets = 1024

// filesBuckets are the tenants' files buckets. A tenant's is created (or
// brought to the configured TTL and size) the first time this worker
// needs it: submitters cannot create one (docs/security.md).
type filesBuckets struct {
	topo jobs.Topology
	js   jetstream.JetStream
	mu   sync.Mutex
	open map[string]jetstream.ObjectStore
}

func (b *filesBuckets) get(ctx context.Context, tenant string) (jetstream.ObjectStore, error) {
	b.mu.Lock()
	store, ok := b.open[tenant]
	b.mu.Unlock()
	if ok {
		return store, nil
	}
	store, err := b.topo.EnsureFilesBucket(ctx, b.js, tenant)
	if err != nil {
		return nil, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.open) >= maxOpenBuckets {
		clear(b.open)
	}
	b.open[tenant] = store
	return store, nil
}

// Limit names of the input caps, in rejection reasons and as bounds.
const (
	limitFileBytes  = "file_bytes"
	limitFilesBytes = "files_bytes"
)

// inputFiles checks a job's input files against the files bucket and the
// caps, from the objects' infos and before anything is downloaded, and
// returns them as lazily fetched sandbox files. The tenant prefixes every
// name: a job can only name its own tenant's objects. Each fetch is bound
// to the size and digest checked here, so the code reads exactly what was
// admitted, or gets EIO.
func (w *Worker) inputFiles(ctx context.Context, d *delivery, files map[string]string) ([]sandbox.InputFile, error) {
	if len(files) == 0 {
		return nil, nil
	}
	store, err := w.files.get(ctx, d.tenant)
	if err != nil {
		return nil, fmt.Errorf("worker: files bucket of tenant %s: %w", d.tenant, err)
	}
	paths := make([]string, 0, len(files))
	for p := range files {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	var total uint64
	out := make([]sandbox.InputFile, 0, len(files))
	for _, p := range paths {
		ref, err := jobs.ParseFileRef(files[p])
		if err != nil {
			return nil, err
		}
		obj := ref.Name
		info, err := store.GetInfo(ctx, obj)
		if errors.Is(err, jetstream.ErrObjectNotFound) {
			return nil, reject(jobs.CodeFileNotFound, "input file %s: no object %q in %s", p, ref.Name, w.cfg.Subjects.FilesBucket(d.tenant))
		}
		if err != nil {
			return nil, fmt.Errorf("worker: looking up input file %s: %w", p, err)
		}
		if info.Size > uint64(w.cfg.FileMaxBytes) { //nolint:gosec // positive by withDefaults
			w.bound(BoundFileBytes)
			return nil, reject(jobs.CodeTooLarge, "input file %s (%s) is %d bytes, the limit %s is %d", p, ref.Name, info.Size, limitFileBytes, w.cfg.FileMaxBytes)
		}
		total += info.Size
		if total > uint64(w.cfg.FilesMaxBytes) { //nolint:gosec // positive by withDefaults
			w.bound(BoundFilesBytes)
			return nil, reject(jobs.CodeTooLarge, "input files are more than %d bytes together (limit %s) at %s", w.cfg.FilesMaxBytes, limitFilesBytes, p)
		}
		if ref.SHA256 != "" && info.Digest != digestOf(ref.SHA256) {
			return nil, reject(jobs.CodeFileMismatch, "input file %s (%s) has digest %s, the job pins sha256:%s", p, ref.Name, info.Digest, ref.SHA256)
		}
		size, digest, guest := info.Size, info.Digest, p
		out = append(out, sandbox.InputFile{
			Path: strings.TrimPrefix(p, jobs.DataDir+"/"),
			Size: int64(size), //nolint:gosec // below FileMaxBytes
			Fetch: func(ctx context.Context) ([]byte, error) {
				data, err := objread.ReadExpect(ctx, store, obj, size, digest)
				if err != nil && ctx.Err() == nil {
					d.log.Warn("input file could not be read: the code gets EIO", "path", guest, "err", err)
				}
				return data, err
			},
		})
	}
	return out, nil
}

// storeOutputs stores the files a job left under /output as
// "<job id>/<path>" in its tenant's bucket and lists them for the result; partial flags
// them when the job did not finish ok. Files that cannot be stored are
// left out and explained in the returned error text.
func (w *Worker) storeOutputs(ctx context.Context, d *delivery, files []sandbox.OutputFile, partial bool) ([]jobs.OutputFile, string) {
	if len(files) == 0 {
		return nil, ""
	}
	// Stored even when the job was cancelled: its context may be over.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), w.cfg.FilesStoreTimeout)
	defer cancel()
	store, err := w.files.get(ctx, d.tenant)
	if err != nil {
		d.log.Warn("opening the files bucket", "err", err)
		return nil, fmt.Sprintf("%d output file(s) not stored: %v", len(files), err)
	}
	bucket := w.cfg.Subjects.FilesBucket(d.tenant)
	var out []jobs.OutputFile
	var failed []string
	for _, f := range files {
		if why := jobs.ValidFilePath(f.Path); why != "" {
			failed = append(failed, fmt.Sprintf("%q: %s", truncate(f.Path), why))
			continue
		}
		sum := sha256.Sum256(f.Data)
		obj := jobs.OutputObject(d.id, f.Path)
		ct := contentType(f.Path)
		meta := jetstream.ObjectMeta{
			Name:     obj,
			Headers:  nats.Header{"Content-Type": []string{ct}},
			Metadata: map[string]string{"job": d.id, "sha256": hex.EncodeToString(sum[:])},
		}
		if _, err := store.Put(ctx, meta, bytes.NewReader(f.Data)); err != nil {
			d.log.Warn("storing an output file", "path", f.Path, "err", err)
			failed = append(failed, fmt.Sprintf("%q: %v", truncate(f.Path), err))
			continue
		}
		out = append(out, jobs.OutputFile{
			Path: f.Path, Size: int64(len(f.Data)), SHA256: hex.EncodeToString(sum[:]),
			Object: obj, Bucket: bucket, ContentType: ct, Partial: partial,
		})
	}
	if len(failed) == 0 {
		return out, ""
	}
	const shown = 8
	msg := fmt.Sprintf("%d output file(s) not stored: ", len(failed))
	if len(failed) > shown {
		failed = append(failed[:shown], "...")
	}
	return out, msg + strings.Join(failed, "; ")
}

// contentType guesses a file's type from its extension. The data
// formats jobs produce most come first: Go's built-in table lacks some
// (.csv), and would otherwise depend on the host's /etc/mime.types.
func contentType(p string) string {
	ext := strings.ToLower(path.Ext(p))
	switch ext {
	case ".csv":
		return "text/csv; charset=utf-8"
	case ".tsv":
		return "text/tab-separated-values; charset=utf-8"
	case ".txt", ".log":
		return "text/plain; charset=utf-8"
	case ".md":
		return "text/markdown; charset=utf-8"
	case ".json":
		return "application/json"
	}
	if ct := mime.TypeByExtension(ext); ct != "" {
		return ct
	}
	return "application/octet-stream"
}

// outputFiles stores the execution's output files and records them, and
// the /output cap it ran into, in res.
func (w *Worker) outputFiles(ctx context.Context, d *delivery, sres *sandbox.Result, res *jobs.Result) {
	if lim := sres.OutputFilesLimit; lim != "" {
		res.FilesLimit = lim
		d.log.Info("job's /output writes refused: limit reached", "limit", lim)
		switch lim {
		case sandbox.LimitOutputFiles:
			w.bound(BoundOutputFiles)
		case sandbox.LimitOutputFilesBytes:
			w.bound(BoundOutputFilesBytes)
		}
	}
	res.Files, res.FilesError = w.storeOutputs(ctx, d, sres.OutputFiles, res.Status != jobs.StatusOK)
}
