package sandbox

import (
	"context"
	"fmt"
	"io"
	"io/fs"
	"path"
	"sort"
	"strings"
	"sync"

	experimentalsys "github.com/tetratelabs/wazero/experimental/sys"
	"github.com/tetratelabs/wazero/sys"

	"github.com/eryx-dev/eryx/runtime/internal/memfs"
)

// Guest mounts of a job's files.
const (
	// DataMount holds the execution's input files, read-only.
	DataMount = "/data"
	// OutputMount is a writable in-memory directory, separate from /tmp,
	// whose files are handed back in Result.OutputFiles.
	OutputMount = "/output"
)

// Bounds of names under /output: the guest chooses them, and each costs
// host memory until the job ends.
const (
	MaxFileNameBytes = 255  // one path component
	MaxFilePathBytes = 1024 // the whole path below the mount
)

// Limit names of the /output caps (Result.OutputFilesLimit).
const (
	LimitOutputFilesBytes = "output_files_bytes"
	LimitOutputFiles      = "output_files"
)

// InputFile is a read-only file of an execution under /data. Its content
// is fetched on the first open, not before: a job that never reads it
// costs nothing, and none of it is copied into guest memory until read.
type InputFile struct {
	// Path is below /data: "sales.csv" is /data/sales.csv. It must be
	// clean, relative and free of "." and ".." components.
	Path string
	// Size is what stat reports and what Fetch must return.
	Size int64
	// Fetch returns the content; it is called at most once per execution,
	// with a context that ends when the execution is stopped.
	Fetch func(ctx context.Context) ([]byte, error)
}

// OutputFile is a file the code left under /output.
type OutputFile struct {
	Path string // below /output, "/"-separated
	Data []byte
}

// dataFS is a sandbox's /data: the current execution's input files. Its
// contents change per execution, not its mount.
type dataFS struct {
	experimentalsys.UnimplementedFS

	mu   sync.Mutex
	ctx  context.Context
	root *dataNode
}

type dataNode struct {
	ino      sys.Inode
	dir      bool
	children map[string]*dataNode
	file     *InputFile

	once  sync.Once // guards the fetch
	data  []byte
	errno experimentalsys.Errno
}

// set replaces the files with an execution's, fetched with ctx.
func (d *dataFS) set(ctx context.Context, files []InputFile) error {
	ino := sys.Inode(1)
	root := &dataNode{ino: ino, dir: true, children: map[string]*dataNode{}}
	for i := range files {
		f := &files[i]
		if err := checkFilePath(f.Path); err != nil {
			return fmt.Errorf("sandbox: input file %q: %w", f.Path, err)
		}
		n := root
		parts := strings.Split(f.Path, "/")
		for j, part := range parts {
			c, ok := n.children[part]
			last := j == len(parts)-1
			switch {
			case ok && (last || !c.dir):
				return fmt.Errorf("sandbox: input file %q collides with another", f.Path)
			case !ok:
				ino++
				c = &dataNode{ino: ino, dir: !last}
				if last {
					c.file = f
				} else {
					c.children = map[string]*dataNode{}
				}
				n.children[part] = c
			}
			n = c
		}
	}
	d.mu.Lock()
	d.ctx, d.root = ctx, root
	d.mu.Unlock()
	return nil
}

// clear releases the execution's files and their fetched content.
func (d *dataFS) clear() {
	d.mu.Lock()
	d.ctx, d.root = nil, nil
	d.mu.Unlock()
}

// checkFilePath accepts a clean relative path of bounded size.
func checkFilePath(p string) error {
	switch {
	case p == "" || len(p) > MaxFilePathBytes:
		return fmt.Errorf("path must be 1-%d bytes", MaxFilePathBytes)
	case strings.ContainsRune(p, 0):
		return fmt.Errorf("NUL in path")
	case path.Clean(p) != p || path.IsAbs(p) || p == "." || p == ".." || strings.HasPrefix(p, "../"):
		return fmt.Errorf("not a clean relative path")
	}
	for _, part := range strings.Split(p, "/") {
		if len(part) > MaxFileNameBytes {
			return fmt.Errorf("component longer than %d bytes", MaxFileNameBytes)
		}
	}
	return nil
}

func (d *dataFS) lookup(p string) (*dataNode, context.Context, experimentalsys.Errno) {
	d.mu.Lock()
	defer d.mu.Unlock()
	n := d.root
	if n == nil {
		n = &dataNode{ino: 1, dir: true}
	}
	for _, part := range strings.Split(strings.Trim(path.Clean("/"+p), "/"), "/") {
		if part == "" {
			continue
		}
		if !n.dir {
			return nil, nil, experimentalsys.ENOTDIR
		}
		c, ok := n.children[part]
		if !ok {
			return nil, nil, experimentalsys.ENOENT
		}
		n = c
	}
	return n, d.ctx, 0
}

func (n *dataNode) stat() sys.Stat_t {
	if n.dir {
		return sys.Stat_t{Ino: n.ino, Mode: fs.ModeDir | 0o555, Nlink: 2}
	}
	return sys.Stat_t{Ino: n.ino, Mode: 0o444, Nlink: 1, Size: n.file.Size}
}

// OpenFile implements sys.FS: read-only, and the first open of a file
// fetches it.
func (d *dataFS) OpenFile(p string, flag experimentalsys.Oflag, _ fs.FileMode) (experimentalsys.File, experimentalsys.Errno) {
	n, ctx, errno := d.lookup(p)
	access := flag & (experimentalsys.O_RDONLY | experimentalsys.O_RDWR | experimentalsys.O_WRONLY)
	if access != experimentalsys.O_RDONLY || flag&(experimentalsys.O_CREAT|experimentalsys.O_TRUNC|experimentalsys.O_APPEND) != 0 {
		if errno == experimentalsys.ENOENT && flag&experimentalsys.O_CREAT == 0 {
			return nil, errno
		}
		return nil, experimentalsys.EROFS
	}
	if errno != 0 {
		return nil, errno
	}
	if n.dir {
		return &dataDir{n: n}, 0
	}
	if flag&experimentalsys.O_DIRECTORY != 0 {
		return nil, experimentalsys.ENOTDIR
	}
	n.once.Do(func() {
		if ctx == nil || n.file.Fetch == nil {
			n.errno = experimentalsys.EIO
			return
		}
		data, err := n.file.Fetch(ctx)
		if err != nil || int64(len(data)) != n.file.Size {
			n.errno = experimentalsys.EIO
			return
		}
		n.data = data
	})
	if n.errno != 0 {
		return nil, n.errno
	}
	return &dataFile{n: n}, 0
}

// Stat implements sys.FS without fetching.
func (d *dataFS) Stat(p string) (sys.Stat_t, experimentalsys.Errno) {
	n, _, errno := d.lookup(p)
	if errno != 0 {
		return sys.Stat_t{}, errno
	}
	return n.stat(), 0
}

// Lstat implements sys.FS; there are no links.
func (d *dataFS) Lstat(p string) (sys.Stat_t, experimentalsys.Errno) { return d.Stat(p) }

func (d *dataFS) Mkdir(string, fs.FileMode) experimentalsys.Errno    { return experimentalsys.EROFS }
func (d *dataFS) Chmod(string, fs.FileMode) experimentalsys.Errno    { return experimentalsys.EROFS }
func (d *dataFS) Rename(string, string) experimentalsys.Errno        { return experimentalsys.EROFS }
func (d *dataFS) Rmdir(string) experimentalsys.Errno                 { return experimentalsys.EROFS }
func (d *dataFS) Unlink(string) experimentalsys.Errno                { return experimentalsys.EROFS }
func (d *dataFS) Link(string, string) experimentalsys.Errno          { return experimentalsys.EROFS }
func (d *dataFS) Symlink(string, string) experimentalsys.Errno       { return experimentalsys.EROFS }
func (d *dataFS) Utimens(string, int64, int64) experimentalsys.Errno { return experimentalsys.EROFS }

// dataFile is an open input file.
type dataFile struct {
	experimentalsys.UnimplementedFile
	n   *dataNode
	pos int64
}

func (f *dataFile) Ino() (sys.Inode, experimentalsys.Errno)   { return f.n.ino, 0 }
func (f *dataFile) IsDir() (bool, experimentalsys.Errno)      { return false, 0 }
func (f *dataFile) Stat() (sys.Stat_t, experimentalsys.Errno) { return f.n.stat(), 0 }

func (f *dataFile) Read(p []byte) (int, experimentalsys.Errno) {
	n, errno := f.Pread(p, f.pos)
	f.pos += int64(n)
	return n, errno
}

func (f *dataFile) Pread(p []byte, off int64) (int, experimentalsys.Errno) {
	if off < 0 {
		return 0, experimentalsys.EINVAL
	}
	if off >= int64(len(f.n.data)) {
		return 0, 0
	}
	return copy(p, f.n.data[off:]), 0
}

// Seek has wazero's signature (an Errno, not an error).
func (f *dataFile) Seek(offset int64, whence int) (int64, experimentalsys.Errno) {
	var base int64
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		base = f.pos
	case io.SeekEnd:
		base = int64(len(f.n.data))
	default:
		return 0, experimentalsys.EINVAL
	}
	if offset > 0 && base > (1<<62)-offset || base+offset < 0 {
		return 0, experimentalsys.EINVAL
	}
	f.pos = base + offset
	return f.pos, 0
}

// dataDir is an open directory of /data.
type dataDir struct {
	experimentalsys.UnimplementedFile
	n       *dataNode
	dirents []experimentalsys.Dirent
	read    bool
}

func (d *dataDir) Ino() (sys.Inode, experimentalsys.Errno)   { return d.n.ino, 0 }
func (d *dataDir) IsDir() (bool, experimentalsys.Errno)      { return true, 0 }
func (d *dataDir) Stat() (sys.Stat_t, experimentalsys.Errno) { return d.n.stat(), 0 }

// Seek has wazero's signature; only a rewind is meaningful.
func (d *dataDir) Seek(offset int64, whence int) (int64, experimentalsys.Errno) {
	if offset != 0 || whence != io.SeekStart {
		return 0, experimentalsys.EINVAL
	}
	d.dirents, d.read = nil, false
	return 0, 0
}

func (d *dataDir) Readdir(n int) ([]experimentalsys.Dirent, experimentalsys.Errno) {
	if !d.read {
		for name, c := range d.n.children {
			e := experimentalsys.Dirent{Ino: c.ino, Name: name}
			if c.dir {
				e.Type = fs.ModeDir
			}
			d.dirents = append(d.dirents, e)
		}
		sort.Slice(d.dirents, func(i, j int) bool { return d.dirents[i].Name < d.dirents[j].Name })
		d.read = true
	}
	if n <= 0 || n > len(d.dirents) {
		n = len(d.dirents)
	}
	out := d.dirents[:n]
	d.dirents = d.dirents[n:]
	return out, 0
}

// outFS is a sandbox's /output: a fresh memfs per execution (so its quota
// is the execution's and nothing leaks into the next job of a session),
// with a cap on the files and directories the code may create and on the
// length of their names, which memfs does not bound.
type outFS struct {
	experimentalsys.UnimplementedFS

	mu       sync.Mutex
	cur      *memfs.FS
	maxBytes int64
	maxNodes int
	nodes    int
	limit    string // the cap the code ran into, if any
}

// reset starts an empty /output with these caps.
func (o *outFS) reset(maxBytes int64, maxNodes int) {
	o.mu.Lock()
	o.cur, o.maxBytes, o.maxNodes, o.nodes, o.limit = memfs.New(maxBytes), maxBytes, maxNodes, 0, ""
	o.mu.Unlock()
}

func (o *outFS) fs() *memfs.FS {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.cur == nil {
		o.cur = memfs.New(0)
	}
	return o.cur
}

func (o *outFS) hit(limit string) {
	o.mu.Lock()
	if o.limit == "" {
		o.limit = limit
	}
	o.mu.Unlock()
}

// checkName bounds a name the guest is about to create.
func checkName(p string) experimentalsys.Errno {
	c := strings.Trim(path.Clean("/"+p), "/")
	if len(c) > MaxFilePathBytes || strings.ContainsRune(p, 0) {
		return experimentalsys.ENAMETOOLONG
	}
	if len(path.Base(c)) > MaxFileNameBytes {
		return experimentalsys.ENAMETOOLONG
	}
	return 0
}

// take reserves one node of the count cap.
func (o *outFS) take() experimentalsys.Errno {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.nodes >= o.maxNodes {
		if o.limit == "" {
			o.limit = LimitOutputFiles
		}
		return experimentalsys.EIO
	}
	o.nodes++
	return 0
}

func (o *outFS) give() {
	o.mu.Lock()
	if o.nodes > 0 {
		o.nodes--
	}
	o.mu.Unlock()
}

// OpenFile implements sys.FS.
func (o *outFS) OpenFile(p string, flag experimentalsys.Oflag, perm fs.FileMode) (experimentalsys.File, experimentalsys.Errno) {
	m := o.fs()
	creating := false
	if flag&experimentalsys.O_CREAT != 0 {
		if _, errno := m.Stat(p); errno == experimentalsys.ENOENT {
			if errno := checkName(p); errno != 0 {
				return nil, errno
			}
			if errno := o.take(); errno != 0 {
				return nil, errno
			}
			creating = true
		}
	}
	f, errno := m.OpenFile(p, flag, perm)
	if errno != 0 {
		if creating {
			o.give()
		}
		return nil, errno
	}
	return &outFile{File: f, o: o}, 0
}

func (o *outFS) Stat(p string) (sys.Stat_t, experimentalsys.Errno)  { return o.fs().Stat(p) }
func (o *outFS) Lstat(p string) (sys.Stat_t, experimentalsys.Errno) { return o.fs().Lstat(p) }
func (o *outFS) Chmod(p string, m fs.FileMode) experimentalsys.Errno {
	return o.fs().Chmod(p, m)
}
func (o *outFS) Utimens(p string, a, m int64) experimentalsys.Errno { return o.fs().Utimens(p, a, m) }

func (o *outFS) Mkdir(p string, perm fs.FileMode) experimentalsys.Errno {
	if errno := checkName(p); errno != 0 {
		return errno
	}
	if errno := o.take(); errno != 0 {
		return errno
	}
	errno := o.fs().Mkdir(p, perm)
	if errno != 0 {
		o.give()
	}
	return errno
}

func (o *outFS) Rmdir(p string) experimentalsys.Errno {
	errno := o.fs().Rmdir(p)
	if errno == 0 {
		o.give()
	}
	return errno
}

func (o *outFS) Unlink(p string) experimentalsys.Errno {
	errno := o.fs().Unlink(p)
	if errno == 0 {
		o.give()
	}
	return errno
}

func (o *outFS) Rename(from, to string) experimentalsys.Errno {
	if errno := checkName(to); errno != 0 {
		return errno
	}
	m := o.fs()
	_, existed := m.Stat(to)
	errno := m.Rename(from, to)
	if errno == 0 && existed == 0 {
		o.give() // the replaced target
	}
	return errno
}

// outFile notes a write refused for the byte cap: the guest only sees
// EIO (wazero has no ENOSPC), the result names the limit.
type outFile struct {
	experimentalsys.File
	o *outFS
}

func (f *outFile) Write(p []byte) (int, experimentalsys.Errno) {
	n, errno := f.File.Write(p)
	f.noteFull(errno)
	return n, errno
}

func (f *outFile) Pwrite(p []byte, off int64) (int, experimentalsys.Errno) {
	n, errno := f.File.Pwrite(p, off)
	f.noteFull(errno)
	return n, errno
}

func (f *outFile) Truncate(size int64) experimentalsys.Errno {
	errno := f.File.Truncate(size)
	f.noteFull(errno)
	return errno
}

func (f *outFile) noteFull(errno experimentalsys.Errno) {
	if errno == experimentalsys.EIO {
		f.o.hit(LimitOutputFilesBytes)
	}
}

// collect takes the files out of the current /output, in path order,
// and leaves it empty. Each file's bytes are copied and then unlinked,
// so the host holds at most the cap plus one file.
func (o *outFS) collect() ([]OutputFile, string) {
	o.mu.Lock()
	m, limit := o.cur, o.limit
	o.cur, o.nodes, o.limit = memfs.New(o.maxBytes), 0, ""
	o.mu.Unlock()
	if m == nil {
		return nil, limit
	}
	var out []OutputFile
	var walk func(dir string)
	walk = func(dir string) {
		d, errno := m.OpenFile(dir, experimentalsys.O_RDONLY|experimentalsys.O_DIRECTORY, 0)
		if errno != 0 {
			return
		}
		ents, _ := d.Readdir(-1)
		_ = d.Close()
		for _, e := range ents {
			p := e.Name
			if dir != "." {
				p = dir + "/" + e.Name
			}
			if e.Type.IsDir() {
				walk(p)
				continue
			}
			f, errno := m.OpenFile(p, experimentalsys.O_RDONLY, 0)
			if errno != 0 {
				continue
			}
			st, _ := f.Stat()
			data := make([]byte, st.Size)
			n, _ := f.Pread(data, 0)
			_ = f.Close()
			_ = m.Unlink(p)
			out = append(out, OutputFile{Path: p, Data: data[:n]})
		}
	}
	walk(".")
	return out, limit
}
