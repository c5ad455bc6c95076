// Package memfs is a small writable in-memory file system for a sandbox's
// scratch space (/tmp). Each sandbox gets its own, it disappears with the
// sandbox, and its total size is capped, so untrusted code can write files
// without touching the host's disk or outliving its job.
package memfs

import (
	"io"
	"io/fs"
	"math"
	"path"
	"sort"
	"strings"
	"sync"
	"time"

	experimentalsys "github.com/tetratelabs/wazero/experimental/sys"
	"github.com/tetratelabs/wazero/sys"
)

// FS implements wazero's experimental sys.FS. It is safe for concurrent use.
type FS struct {
	experimentalsys.UnimplementedFS

	mu    sync.Mutex
	root  *node
	quota int64 // bytes of file data, all files together
	used  int64
	ino   sys.Inode
}

type node struct {
	ino      sys.Inode
	dir      bool
	data     []byte
	children map[string]*node
	atime    int64
	mtime    int64
	ctime    int64
}

// New returns an empty file system holding at most quota bytes of data.
func New(quota int64) *FS {
	f := &FS{quota: quota}
	f.root = f.newNode(true)
	return f
}

// Clear removes every file and directory. Files still open keep their
// data but are no longer reachable by name.
func (f *FS) Clear() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.ino = 0 // inode numbers start over, as in a new FS
	f.root = f.newNode(true)
	f.used = 0
}

// Used reports the bytes of file data stored.
func (f *FS) Used() int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.used
}

func (f *FS) newNode(dir bool) *node {
	f.ino++
	now := time.Now().UnixNano()
	n := &node{ino: f.ino, dir: dir, atime: now, mtime: now, ctime: now}
	if dir {
		n.children = map[string]*node{}
	}
	return n
}

// touch records a change of n's data (mtime and ctime), as write(2) does.
func (n *node) touch() {
	n.mtime = time.Now().UnixNano()
	n.ctime = n.mtime
}

// dirOnly reports whether p names a directory by its form: a trailing
// slash (or "/.") makes Linux refuse a path that resolves to a file
// (ENOTDIR) and refuse to create a file there (EISDIR).
func dirOnly(p string) bool {
	return strings.HasSuffix(p, "/") || strings.HasSuffix(p, "/.") || p == "."
}

// inside reports whether the cleaned path p is below dir (rename(2)'s
// EINVAL: a directory cannot become its own descendant).
func inside(p, dir string) bool {
	p, dir = path.Clean("/"+p), path.Clean("/"+dir)
	return dir == "/" || strings.HasPrefix(p, dir+"/")
}

// split cleans p ("." is the root) into its parent directory and base name.
func split(p string) (dir, base string) {
	p = path.Clean("/" + p)
	if p == "/" {
		return "", ""
	}
	return path.Dir(p), path.Base(p)
}

// lookup returns the node at p; the caller holds f.mu.
func (f *FS) lookup(p string) (*node, experimentalsys.Errno) {
	n := f.root
	for _, part := range strings.Split(strings.Trim(path.Clean("/"+p), "/"), "/") {
		if part == "" {
			continue
		}
		if !n.dir {
			return nil, experimentalsys.ENOTDIR
		}
		c, ok := n.children[part]
		if !ok {
			return nil, experimentalsys.ENOENT
		}
		n = c
	}
	return n, 0
}

func (f *FS) parent(p string) (*node, string, experimentalsys.Errno) {
	dir, base := split(p)
	if base == "" {
		return nil, "", experimentalsys.EINVAL
	}
	d, errno := f.lookup(dir)
	if errno != 0 {
		return nil, "", errno
	}
	if !d.dir {
		return nil, "", experimentalsys.ENOTDIR
	}
	return d, base, 0
}

// OpenFile implements sys.FS.
func (f *FS) OpenFile(p string, flag experimentalsys.Oflag, _ fs.FileMode) (experimentalsys.File, experimentalsys.Errno) {
	f.mu.Lock()
	defer f.mu.Unlock()
	n, errno := f.lookup(p)
	switch {
	case errno == experimentalsys.ENOENT && flag&experimentalsys.O_CREAT != 0:
		d, base, errno := f.parent(p)
		if errno != 0 {
			return nil, errno
		}
		if dirOnly(p) {
			return nil, experimentalsys.EISDIR
		}
		n = f.newNode(false)
		d.children[base] = n
		d.touch()
	case errno != 0:
		return nil, errno
	case flag&experimentalsys.O_CREAT != 0 && flag&experimentalsys.O_EXCL != 0:
		return nil, experimentalsys.EEXIST
	case !n.dir && dirOnly(p) && flag&experimentalsys.O_CREAT != 0:
		return nil, experimentalsys.EISDIR
	case !n.dir && dirOnly(p):
		return nil, experimentalsys.ENOTDIR
	}
	access := flag & (experimentalsys.O_RDONLY | experimentalsys.O_RDWR | experimentalsys.O_WRONLY)
	writable := access == experimentalsys.O_RDWR || access == experimentalsys.O_WRONLY
	if n.dir && writable {
		return nil, experimentalsys.EISDIR
	}
	if !n.dir && flag&experimentalsys.O_DIRECTORY != 0 {
		return nil, experimentalsys.ENOTDIR
	}
	if writable && flag&experimentalsys.O_TRUNC != 0 && len(n.data) > 0 {
		f.used -= int64(len(n.data))
		n.data = nil
		n.touch()
	}
	return &file{fs: f, n: n, readable: access != experimentalsys.O_WRONLY, writable: writable,
		appendMode: flag&experimentalsys.O_APPEND != 0}, 0
}

func stat(n *node) sys.Stat_t {
	st := sys.Stat_t{Ino: n.ino, Nlink: 1, Mode: 0o644, Size: int64(len(n.data)), Atim: n.atime, Mtim: n.mtime, Ctim: n.ctime}
	if n.dir {
		st.Mode, st.Nlink, st.Size = fs.ModeDir|0o755, 2, 0
	}
	return st
}

// Stat implements sys.FS.
func (f *FS) Stat(p string) (sys.Stat_t, experimentalsys.Errno) {
	f.mu.Lock()
	defer f.mu.Unlock()
	n, errno := f.lookup(p)
	if errno != 0 {
		return sys.Stat_t{}, errno
	}
	if !n.dir && dirOnly(p) {
		return sys.Stat_t{}, experimentalsys.ENOTDIR
	}
	return stat(n), 0
}

// Readlink implements sys.FS: there are no symbolic links, so an existing
// path is EINVAL (readlink(2) on a file that is not a link).
func (f *FS) Readlink(p string) (string, experimentalsys.Errno) {
	if _, errno := f.Stat(p); errno != 0 {
		return "", errno
	}
	return "", experimentalsys.EINVAL
}

// Lstat implements sys.FS; there are no symbolic links.
func (f *FS) Lstat(p string) (sys.Stat_t, experimentalsys.Errno) { return f.Stat(p) }

// Mkdir implements sys.FS.
func (f *FS) Mkdir(p string, _ fs.FileMode) experimentalsys.Errno {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, base := split(p); base == "" {
		return experimentalsys.EEXIST // the mount point itself
	}
	d, base, errno := f.parent(p)
	if errno != 0 {
		return errno
	}
	if _, ok := d.children[base]; ok {
		return experimentalsys.EEXIST
	}
	d.children[base] = f.newNode(true)
	d.touch()
	return 0
}

// Rmdir implements sys.FS.
func (f *FS) Rmdir(p string) experimentalsys.Errno { return f.remove(p, true) }

// Unlink implements sys.FS.
func (f *FS) Unlink(p string) experimentalsys.Errno { return f.remove(p, false) }

// remove deletes the directory (dir) or file at p, with the errors of
// rmdir(2) or unlink(2), and gives a file's bytes back to the quota.
func (f *FS) remove(p string, dir bool) experimentalsys.Errno {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, base := split(p); base == "" && !dir {
		return experimentalsys.EISDIR // unlink of the mount point (rmdir: EINVAL, as for ".")
	}
	d, base, errno := f.parent(p)
	if errno != 0 {
		return errno
	}
	n, ok := d.children[base]
	switch {
	case !ok:
		return experimentalsys.ENOENT
	case dir && !n.dir, !n.dir && dirOnly(p):
		return experimentalsys.ENOTDIR
	case !dir && n.dir:
		return experimentalsys.EISDIR
	case dir && len(n.children) > 0:
		return experimentalsys.ENOTEMPTY
	}
	delete(d.children, base)
	d.touch()
	f.used -= int64(len(n.data))
	return 0
}

// Rename implements sys.FS.
func (f *FS) Rename(from, to string) experimentalsys.Errno {
	f.mu.Lock()
	defer f.mu.Unlock()
	fd, fbase, errno := f.parent(from)
	if errno != 0 {
		return errno
	}
	n, ok := fd.children[fbase]
	if !ok {
		return experimentalsys.ENOENT
	}
	td, tbase, errno := f.parent(to)
	if errno != 0 {
		return errno
	}
	switch {
	case !n.dir && (dirOnly(from) || dirOnly(to)):
		return experimentalsys.ENOTDIR
	case n.dir && inside(to, from) && path.Clean("/"+to) != path.Clean("/"+from):
		// Linux: EINVAL, and nothing moves (the tree would be cut off).
		return experimentalsys.EINVAL
	}
	old, ok := td.children[tbase]
	if ok && old == n {
		return 0 // same file: rename(2) does nothing
	}
	if ok {
		if old.dir != n.dir {
			if old.dir {
				return experimentalsys.EISDIR
			}
			return experimentalsys.ENOTDIR
		}
		if old.dir && len(old.children) > 0 {
			return experimentalsys.ENOTEMPTY
		}
		f.used -= int64(len(old.data))
	}
	delete(fd.children, fbase)
	td.children[tbase] = n
	fd.touch()
	td.touch()
	n.ctime = fd.ctime
	return 0
}

// Utimens implements sys.FS. wazero has already turned UTIME_NOW into
// the current time; UTIME_OMIT leaves a time as it is.
func (f *FS) Utimens(p string, atim, mtim int64) experimentalsys.Errno {
	f.mu.Lock()
	defer f.mu.Unlock()
	n, errno := f.lookup(p)
	if errno != 0 {
		return errno
	}
	if !n.dir && dirOnly(p) {
		return experimentalsys.ENOTDIR
	}
	n.utimens(atim, mtim)
	return 0
}

// utimens sets the times that are not UTIME_OMIT; the caller holds f.mu.
func (n *node) utimens(atim, mtim int64) {
	if atim != experimentalsys.UTIME_OMIT {
		n.atime = atim
	}
	if mtim != experimentalsys.UTIME_OMIT {
		n.mtime = mtim
	}
	n.ctime = time.Now().UnixNano()
}

// Chmod implements sys.FS; permissions are not modelled (WASI's stat has
// no permission bits to report them in).
func (f *FS) Chmod(p string, _ fs.FileMode) experimentalsys.Errno {
	_, errno := f.Stat(p)
	return errno
}

// file is an open file or directory.
type file struct {
	experimentalsys.UnimplementedFile
	fs                             *FS
	n                              *node
	pos                            int64
	readable, writable, appendMode bool
	dirents                        []experimentalsys.Dirent
	dirRead                        bool
}

func (fl *file) IsDir() (bool, experimentalsys.Errno) { return fl.n.dir, 0 }
func (fl *file) IsAppend() bool                       { return fl.appendMode }

func (fl *file) SetAppend(enable bool) experimentalsys.Errno {
	fl.appendMode = enable
	return 0
}

func (fl *file) Ino() (sys.Inode, experimentalsys.Errno) { return fl.n.ino, 0 }

func (fl *file) Stat() (sys.Stat_t, experimentalsys.Errno) {
	fl.fs.mu.Lock()
	defer fl.fs.mu.Unlock()
	return stat(fl.n), 0
}

func (fl *file) Read(p []byte) (int, experimentalsys.Errno) {
	n, errno := fl.Pread(p, fl.pos)
	fl.pos += int64(n)
	return n, errno
}

func (fl *file) Pread(p []byte, off int64) (int, experimentalsys.Errno) {
	if fl.n.dir {
		return 0, experimentalsys.EISDIR
	}
	if !fl.readable {
		return 0, experimentalsys.EBADF
	}
	if errno := checkRange(off, len(p)); errno != 0 {
		return 0, errno
	}
	fl.fs.mu.Lock()
	defer fl.fs.mu.Unlock()
	if off >= int64(len(fl.n.data)) {
		return 0, 0
	}
	return copy(p, fl.n.data[off:]), 0
}

func (fl *file) Write(p []byte) (int, experimentalsys.Errno) {
	if fl.appendMode {
		fl.fs.mu.Lock()
		fl.pos = int64(len(fl.n.data))
		fl.fs.mu.Unlock()
	}
	n, errno := fl.Pwrite(p, fl.pos)
	fl.pos += int64(n)
	return n, errno
}

func (fl *file) Pwrite(p []byte, off int64) (int, experimentalsys.Errno) {
	if !fl.writable {
		return 0, experimentalsys.EBADF
	}
	if errno := checkRange(off, len(p)); errno != 0 {
		return 0, errno
	}
	fl.fs.mu.Lock()
	defer fl.fs.mu.Unlock()
	if errno := fl.fs.grow(fl.n, off+int64(len(p))); errno != 0 {
		return 0, errno
	}
	copy(fl.n.data[off:], p)
	return len(p), 0
}

// checkRange refuses what Linux's read and write refuse before any file
// system sees them (rw_verify_area): a negative offset, or one whose end
// does not fit in an off_t. The guest chooses both numbers, and unchecked
// they overflow the slice arithmetic below (a host panic, the sandbox
// crashed).
func checkRange(off int64, n int) experimentalsys.Errno {
	if off < 0 || int64(n) > math.MaxInt64-off {
		return experimentalsys.EINVAL
	}
	return 0
}

// grow extends n's data with zeros to end bytes, if shorter; the caller
// holds f.mu and has checked that end is not negative. The quota is
// checked before anything is allocated: the guest picks end, and an
// allocation of its choosing could exhaust the host (Go's out-of-memory is
// fatal to the whole process, not just this sandbox). There is no ENOSPC
// or EFBIG in wazero's errno set, so a full quota is EIO.
func (f *FS) grow(n *node, end int64) experimentalsys.Errno {
	grow := end - int64(len(n.data))
	if grow <= 0 {
		n.touch()
		return 0
	}
	if grow > f.quota-f.used {
		return experimentalsys.EIO
	}
	f.used += grow
	if end > int64(cap(n.data)) {
		data := make([]byte, end, max(end, min(2*int64(cap(n.data)), int64(len(n.data))+f.quota)))
		copy(data, n.data)
		n.data = data
	} else {
		clear(n.data[len(n.data):end])
		n.data = n.data[:end]
	}
	n.touch()
	return 0
}

// Seek has wazero's signature (an Errno, not an error).
func (fl *file) Seek(offset int64, whence int) (int64, experimentalsys.Errno) {
	if fl.n.dir {
		if offset != 0 || whence != io.SeekStart {
			return 0, experimentalsys.EINVAL
		}
		fl.dirents, fl.dirRead = nil, false
		return 0, 0
	}
	var base int64
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		base = fl.pos
	case io.SeekEnd:
		fl.fs.mu.Lock()
		base = int64(len(fl.n.data))
		fl.fs.mu.Unlock()
	default:
		return 0, experimentalsys.EINVAL
	}
	// Linux: EINVAL for a negative result, EOVERFLOW (not in wazero's set)
	// for one past the largest off_t.
	if offset > 0 && base > math.MaxInt64-offset || base+offset < 0 {
		return 0, experimentalsys.EINVAL
	}
	fl.pos = base + offset
	return fl.pos, 0
}

func (fl *file) Readdir(n int) ([]experimentalsys.Dirent, experimentalsys.Errno) {
	if !fl.n.dir {
		return nil, experimentalsys.EBADF
	}
	if !fl.dirRead {
		fl.fs.mu.Lock()
		for name, c := range fl.n.children {
			d := experimentalsys.Dirent{Ino: c.ino, Name: name}
			if c.dir {
				d.Type = fs.ModeDir
			}
			fl.dirents = append(fl.dirents, d)
		}
		fl.fs.mu.Unlock()
		sort.Slice(fl.dirents, func(i, j int) bool { return fl.dirents[i].Name < fl.dirents[j].Name })
		fl.dirRead = true
	}
	if n <= 0 || n > len(fl.dirents) {
		n = len(fl.dirents)
	}
	out := fl.dirents[:n]
	fl.dirents = fl.dirents[n:]
	return out, 0
}

func (fl *file) Truncate(size int64) experimentalsys.Errno {
	if !fl.writable {
		return experimentalsys.EBADF
	}
	if size < 0 {
		return experimentalsys.EINVAL
	}
	fl.fs.mu.Lock()
	defer fl.fs.mu.Unlock()
	cur := int64(len(fl.n.data))
	if size <= cur {
		fl.fs.used -= cur - size
		fl.n.data = fl.n.data[:size]
		fl.n.touch()
		return 0
	}
	return fl.fs.grow(fl.n, size)
}

func (fl *file) Sync() experimentalsys.Errno     { return 0 }
func (fl *file) Datasync() experimentalsys.Errno { return 0 }

func (fl *file) Utimens(atim, mtim int64) experimentalsys.Errno {
	fl.fs.mu.Lock()
	defer fl.fs.mu.Unlock()
	fl.n.utimens(atim, mtim)
	return 0
}
