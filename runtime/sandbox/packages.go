package sandbox

import (
	"archive/tar"
	"archive/zip"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"sort"
	"strings"
	"sync"
	"time"
)

// ErrBadPackage: a package archive is corrupt, unsupported, or contains
// native code, which a wasm sandbox cannot load.
var ErrBadPackage = errors.New("sandbox: bad package")

// MaxPackageBytes caps one package, archived or expanded.
const MaxPackageBytes = 64 << 20

// Package is pure-Python code made importable for an execution. Build one
// with NewPackage or PackageFromFS; it is immutable and can be shared by
// any number of executions.
type Package struct {
	// Name identifies the package in messages.
	Name string
	// file is the package as a stored zip, which the guest imports with
	// zipimport; the name carries a content hash so that a changed package
	// never hits a stale import cache.
	file string
	zip  []byte
}

// File is the guest path of the package archive.
func (p *Package) File() string { return "/pkg/" + p.file }

var nativeSuffixes = []string{".so", ".pyd", ".dylib", ".dll", ".a", ".o", ".wasm"}

// NewPackage prepares a .whl, .zip or .tar.gz archive of pure-Python code.
// Wheels and zips are importable from their root; for an sdist (.tar.gz) the
// top directory is stripped, and its src/ used when present.
func NewPackage(name string, archive []byte) (*Package, error) {
	if len(archive) > MaxPackageBytes {
		return nil, fmt.Errorf("%w %q: %d bytes, limit %d", ErrBadPackage, name, len(archive), MaxPackageBytes)
	}
	var files map[string][]byte
	var err error
	switch {
	case bytes.HasPrefix(archive, []byte("PK\x03\x04")):
		files, err = readZip(archive)
	case bytes.HasPrefix(archive, []byte{0x1f, 0x8b}):
		files, err = readTarGz(archive)
	default:
		err = errors.New("not a wheel, zip or .tar.gz archive")
	}
	if err != nil {
		return nil, fmt.Errorf("%w %q: %w", ErrBadPackage, name, err)
	}
	return newPackage(name, files)
}

// PackageFromFS prepares a directory tree whose root holds the importable
// modules and packages.
func PackageFromFS(name string, fsys fs.FS) (*Package, error) {
	files := map[string][]byte{}
	total := 0
	err := fs.WalkDir(fsys, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := fs.ReadFile(fsys, p)
		if err != nil {
			return err
		}
		total += len(b)
		if total > MaxPackageBytes {
			return fmt.Errorf("larger than %d bytes", MaxPackageBytes)
		}
		files[p] = b
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("%w %q: %w", ErrBadPackage, name, err)
	}
	return newPackage(name, files)
}

func newPackage(name string, files map[string][]byte) (*Package, error) {
	hasPython := false
	names := make([]string, 0, len(files))
	for p := range files {
		for _, suf := range nativeSuffixes {
			if strings.HasSuffix(strings.ToLower(p), suf) {
				return nil, fmt.Errorf("%w %q: %s is a native extension; only pure-Python packages can run in the sandbox",
					ErrBadPackage, name, p)
			}
		}
		if strings.HasSuffix(p, ".py") {
			hasPython = true
		}
		names = append(names, p)
	}
	if !hasPython {
		return nil, fmt.Errorf("%w %q: no Python modules in it", ErrBadPackage, name)
	}
	sort.Strings(names)
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for _, p := range names {
		// Stored, not deflated: the guest imports without decompressing.
		w, err := zw.CreateHeader(&zip.FileHeader{Name: p, Method: zip.Store, Modified: time.Unix(315532800, 0)})
		if err != nil {
			return nil, err
		}
		if _, err := w.Write(files[p]); err != nil {
			return nil, err
		}
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	sum := sha256.Sum256(buf.Bytes())
	safe := strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '-' || r == '.' {
			return r
		}
		return '_'
	}, name)
	return &Package{Name: name, file: safe + "-" + hex.EncodeToString(sum[:6]) + ".zip", zip: buf.Bytes()}, nil
}

func cleanMember(p string) (string, error) {
	c := path.Clean(strings.TrimPrefix(p, "/"))
	if c == ".." || strings.HasPrefix(c, "../") || path.IsAbs(p) {
		return "", fmt.Errorf("member %q escapes the archive", p)
	}
	return c, nil
}

func readZip(archive []byte) (map[string][]byte, error) {
	zr, err := zip.NewReader(bytes.NewReader(archive), int64(len(archive)))
	if err != nil {
		return nil, err
	}
	files := map[string][]byte{}
	total := int64(0)
	for _, f := range zr.File {
		if f.FileInfo().IsDir() {
			continue
		}
		name, err := cleanMember(f.Name)
		if err != nil {
			return nil, err
		}
		total += int64(f.UncompressedSize64)
		if total > MaxPackageBytes {
			return nil, fmt.Errorf("expands beyond %d bytes", MaxPackageBytes)
		}
		rc, err := f.Open()
		if err != nil {
			return nil, err
		}
		b, err := io.ReadAll(io.LimitReader(rc, MaxPackageBytes+1))
		_ = rc.Close()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", f.Name, err)
		}
		files[name] = b
	}
	return files, nil
}

func readTarGz(archive []byte) (map[string][]byte, error) {
	gz, err := gzip.NewReader(bytes.NewReader(archive))
	if err != nil {
		return nil, err
	}
	tr := tar.NewReader(io.LimitReader(gz, 4*MaxPackageBytes))
	raw := map[string][]byte{}
	total := 0
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, err
		}
		if h.Typeflag != tar.TypeReg {
			continue
		}
		name, err := cleanMember(h.Name)
		if err != nil {
			return nil, err
		}
		b, err := io.ReadAll(io.LimitReader(tr, MaxPackageBytes+1))
		if err != nil {
			return nil, err
		}
		total += len(b)
		if total > MaxPackageBytes {
			return nil, fmt.Errorf("expands beyond %d bytes", MaxPackageBytes)
		}
		raw[name] = b
	}
	// An sdist holds one top directory (name-version/), maybe with src/.
	top := ""
	for p := range raw {
		first, _, _ := strings.Cut(p, "/")
		if top == "" {
			top = first
		} else if top != first {
			top = ""
			break
		}
	}
	prefix := ""
	if top != "" {
		prefix = top + "/"
		for p := range raw {
			if strings.HasPrefix(p, prefix+"src/") {
				prefix += "src/"
				break
			}
		}
	}
	files := map[string][]byte{}
	for p, b := range raw {
		if rel, ok := strings.CutPrefix(p, prefix); ok && rel != "" {
			files[rel] = b
		}
	}
	return files, nil
}

// pkgFS is a sandbox's /pkg: the archives of the current execution's
// packages, read-only. Its contents change per execution, not its mount.
type pkgFS struct {
	mu    sync.RWMutex
	pkgs  []*Package
	files map[string][]byte
}

func (p *pkgFS) set(pkgs []*Package) {
	files := make(map[string][]byte, len(pkgs))
	for _, pk := range pkgs {
		files[pk.file] = pk.zip
	}
	p.mu.Lock()
	p.pkgs, p.files = pkgs, files
	p.mu.Unlock()
}

func (p *pkgFS) current() []*Package {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return p.pkgs
}

func (p *pkgFS) Open(name string) (fs.File, error) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if name == "." {
		entries := make([]fs.DirEntry, 0, len(p.files))
		for n, b := range p.files {
			entries = append(entries, fs.FileInfoToDirEntry(fileInfo{name: n, size: int64(len(b))}))
		}
		sort.Slice(entries, func(i, j int) bool { return entries[i].Name() < entries[j].Name() })
		return &dirFile{entries: entries}, nil
	}
	b, ok := p.files[name]
	if !ok {
		return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrNotExist}
	}
	return &memFile{Reader: bytes.NewReader(b), info: fileInfo{name: name, size: int64(len(b))}}, nil
}

type fileInfo struct {
	name string
	size int64
	dir  bool
}

func (f fileInfo) Name() string { return f.name }
func (f fileInfo) Size() int64  { return f.size }
func (f fileInfo) Mode() fs.FileMode {
	if f.dir {
		return fs.ModeDir | 0o555
	}
	return 0o444
}
func (f fileInfo) ModTime() time.Time { return time.Unix(315532800, 0) }
func (f fileInfo) IsDir() bool        { return f.dir }
func (f fileInfo) Sys() any           { return nil }

type memFile struct {
	*bytes.Reader
	info fileInfo
}

func (f *memFile) Stat() (fs.FileInfo, error) { return f.info, nil }
func (f *memFile) Close() error               { return nil }

type dirFile struct {
	entries []fs.DirEntry
	off     int
}

func (d *dirFile) Stat() (fs.FileInfo, error) { return fileInfo{name: ".", dir: true}, nil }
func (d *dirFile) Read([]byte) (int, error)   { return 0, fs.ErrInvalid }
func (d *dirFile) Close() error               { return nil }

func (d *dirFile) ReadDir(n int) ([]fs.DirEntry, error) {
	rest := d.entries[d.off:]
	if n <= 0 {
		d.off = len(d.entries)
		return rest, nil
	}
	if len(rest) == 0 {
		return nil, io.EOF
	}
	n = min(n, len(rest))
	d.off += n
	return rest[:n], nil
}
