package sandbox

import (
	"io/fs"
	"path"
	"strings"

	experimentalsys "github.com/tetratelabs/wazero/experimental/sys"
	"github.com/tetratelabs/wazero/sys"
)

// rootFS is the guest's "/": a read-only directory that lists the mounts.
// Without it a path outside every mount (including "/" itself and the
// working directory "/") has no preopen, and wasi-libc fails it with
// ENOTCAPABLE, which Python sees as PermissionError [Errno 76] where Linux
// code expects FileNotFoundError or a listing. wasi-libc resolves a path
// against the longest matching preopen, so /tmp, /lib, ... still go to their
// own file systems; only the names below reach this one.
type rootFS struct {
	experimentalsys.UnimplementedFS
	names []string // the mount points' first components, sorted
}

func newRootFS(mounts ...string) rootFS {
	r := rootFS{}
	for _, m := range mounts {
		r.names = append(r.names, strings.Trim(m, "/"))
	}
	return r
}

// entry returns the mount named by p ("" for the root), or ENOENT.
func (r rootFS) entry(p string) (string, experimentalsys.Errno) {
	p = strings.Trim(path.Clean("/"+p), "/")
	if p == "" {
		return "", 0
	}
	first, _, _ := strings.Cut(p, "/")
	for _, n := range r.names {
		if n == first && n == p {
			return n, 0
		}
	}
	return "", experimentalsys.ENOENT
}

func (r rootFS) stat(p string) (sys.Stat_t, experimentalsys.Errno) {
	n, errno := r.entry(p)
	if errno != 0 {
		return sys.Stat_t{}, errno
	}
	st := sys.Stat_t{Mode: fs.ModeDir | 0o555, Nlink: 2, Ino: 1}
	for i, name := range r.names {
		if name == n {
			st.Ino = sys.Inode(i + 2)
		}
	}
	return st, 0
}

// OpenFile implements sys.FS: directories only, never for writing.
func (r rootFS) OpenFile(p string, flag experimentalsys.Oflag, _ fs.FileMode) (experimentalsys.File, experimentalsys.Errno) {
	st, errno := r.stat(p)
	if errno != 0 {
		if flag&experimentalsys.O_CREAT != 0 {
			return nil, experimentalsys.EROFS
		}
		return nil, errno
	}
	if flag&(experimentalsys.O_RDWR|experimentalsys.O_WRONLY) != 0 {
		return nil, experimentalsys.EISDIR
	}
	d := &listDir{st: st}
	if n, _ := r.entry(p); n == "" {
		for i, name := range r.names {
			d.entries = append(d.entries, experimentalsys.Dirent{Name: name, Ino: sys.Inode(i + 2), Type: fs.ModeDir})
		}
	}
	return d, 0
}

func (r rootFS) Stat(p string) (sys.Stat_t, experimentalsys.Errno)  { return r.stat(p) }
func (r rootFS) Lstat(p string) (sys.Stat_t, experimentalsys.Errno) { return r.stat(p) }

// Readlink implements sys.FS: nothing here is a link.
func (r rootFS) Readlink(p string) (string, experimentalsys.Errno) {
	if _, errno := r.stat(p); errno != 0 {
		return "", errno
	}
	return "", experimentalsys.EINVAL
}

func (r rootFS) Mkdir(p string, _ fs.FileMode) experimentalsys.Errno {
	if _, errno := r.stat(p); errno == 0 {
		return experimentalsys.EEXIST
	}
	return experimentalsys.EROFS
}
func (r rootFS) Rmdir(p string) experimentalsys.Errno  { return r.modify(p) }
func (r rootFS) Unlink(p string) experimentalsys.Errno { return r.modify(p) }
func (r rootFS) Chmod(p string, _ fs.FileMode) experimentalsys.Errno {
	return r.modify(p)
}
func (r rootFS) Utimens(p string, _, _ int64) experimentalsys.Errno { return r.modify(p) }
func (r rootFS) Rename(from, _ string) experimentalsys.Errno        { return r.modify(from) }
func (r rootFS) Link(from, _ string) experimentalsys.Errno          { return r.modify(from) }
func (r rootFS) Symlink(_, to string) experimentalsys.Errno {
	if _, errno := r.stat(to); errno == 0 {
		return experimentalsys.EEXIST
	}
	return experimentalsys.EROFS
}

// modify is the answer to a change of an existing path (EROFS) or of a
// missing one (ENOENT), as on a read-only mount.
func (r rootFS) modify(p string) experimentalsys.Errno {
	if _, errno := r.stat(p); errno != 0 {
		return errno
	}
	return experimentalsys.EROFS
}

// listDir is an open, read-only directory with fixed entries.
type listDir struct {
	experimentalsys.UnimplementedFile
	st      sys.Stat_t
	entries []experimentalsys.Dirent
	pos     int
}

func (d *listDir) IsDir() (bool, experimentalsys.Errno)      { return true, 0 }
func (d *listDir) Stat() (sys.Stat_t, experimentalsys.Errno) { return d.st, 0 }
func (d *listDir) Ino() (sys.Inode, experimentalsys.Errno)   { return d.st.Ino, 0 }

// Seek rewinds (the only seek on a directory that wazero passes on).
func (d *listDir) Seek(int64, int) (int64, experimentalsys.Errno) { d.pos = 0; return 0, 0 }

func (d *listDir) Readdir(n int) ([]experimentalsys.Dirent, experimentalsys.Errno) {
	rest := d.entries[d.pos:]
	if n <= 0 || n > len(rest) {
		n = len(rest)
	}
	d.pos += n
	return rest[:n], 0
}

// readOnlyFS gives a read-only mount (the stdlib, packages) Linux's errors
// for changes: EROFS for an existing path or a creation, ENOENT for a
// missing one, EINVAL for readlink of a file. wazero's adapter of an fs.FS
// answers all of them ENOSYS.
type readOnlyFS struct {
	experimentalsys.FS
}

func (r readOnlyFS) exists(p string) experimentalsys.Errno {
	_, errno := r.Stat(p)
	return errno
}

// OpenFile implements sys.FS.
func (r readOnlyFS) OpenFile(p string, flag experimentalsys.Oflag, perm fs.FileMode) (experimentalsys.File, experimentalsys.Errno) {
	writes := flag&(experimentalsys.O_RDWR|experimentalsys.O_WRONLY|experimentalsys.O_CREAT|experimentalsys.O_TRUNC) != 0
	if !writes {
		return r.FS.OpenFile(p, flag, perm)
	}
	st, errno := r.Stat(p)
	switch {
	case errno == experimentalsys.ENOENT && flag&experimentalsys.O_CREAT != 0:
		return nil, experimentalsys.EROFS
	case errno != 0:
		return nil, errno
	case flag&experimentalsys.O_CREAT != 0 && flag&experimentalsys.O_EXCL != 0:
		return nil, experimentalsys.EEXIST
	case st.Mode.IsDir():
		return nil, experimentalsys.EISDIR
	}
	return nil, experimentalsys.EROFS
}

func (r readOnlyFS) modify(p string) experimentalsys.Errno {
	if errno := r.exists(p); errno != 0 {
		return errno
	}
	return experimentalsys.EROFS
}

func (r readOnlyFS) Mkdir(p string, _ fs.FileMode) experimentalsys.Errno {
	switch errno := r.exists(p); errno {
	case 0:
		return experimentalsys.EEXIST
	case experimentalsys.ENOENT:
		// mkdir(2) reports a missing parent before the read-only mount.
		if parent := path.Dir(path.Clean("/" + p)); parent != "/" {
			if errno := r.exists(parent[1:]); errno != 0 {
				return errno
			}
		}
		return experimentalsys.EROFS
	default:
		return errno
	}
}
func (r readOnlyFS) Rmdir(p string) experimentalsys.Errno                { return r.modify(p) }
func (r readOnlyFS) Unlink(p string) experimentalsys.Errno               { return r.modify(p) }
func (r readOnlyFS) Chmod(p string, _ fs.FileMode) experimentalsys.Errno { return r.modify(p) }
func (r readOnlyFS) Utimens(p string, _, _ int64) experimentalsys.Errno  { return r.modify(p) }
func (r readOnlyFS) Rename(from, _ string) experimentalsys.Errno         { return r.modify(from) }
func (r readOnlyFS) Link(from, _ string) experimentalsys.Errno           { return r.modify(from) }
func (r readOnlyFS) Symlink(_, to string) experimentalsys.Errno          { return r.Mkdir(to, 0) }
func (r readOnlyFS) Readlink(p string) (string, experimentalsys.Errno)   { return "", r.invalid(p) }
func (r readOnlyFS) invalid(p string) experimentalsys.Errno {
	if errno := r.exists(p); errno != 0 {
		return errno
	}
	return experimentalsys.EINVAL
}
