package sandbox

import (
	"io/fs"

	experimentalsys "github.com/tetratelabs/wazero/experimental/sys"
	"github.com/tetratelabs/wazero/sys"
)

// devFS is the guest's /dev: just a null device. Some libraries open
// os.devnull (dill does at import time, for every mode), and a sandbox has
// no host /dev to lend them.
type devFS struct {
	experimentalsys.UnimplementedFS
}

func (devFS) OpenFile(path string, flag experimentalsys.Oflag, _ fs.FileMode) (experimentalsys.File, experimentalsys.Errno) {
	switch path {
	case "", ".":
		return &devDir{}, 0
	case "null":
		return nullFile{}, 0
	}
	if flag&experimentalsys.O_CREAT != 0 {
		return nil, experimentalsys.EROFS
	}
	return nil, experimentalsys.ENOENT
}

func (devFS) Stat(path string) (sys.Stat_t, experimentalsys.Errno) {
	switch path {
	case "", ".":
		return dirStat, 0
	case "null":
		return nullStat, 0
	}
	return sys.Stat_t{}, experimentalsys.ENOENT
}

func (d devFS) Lstat(path string) (sys.Stat_t, experimentalsys.Errno) { return d.Stat(path) }

var (
	dirStat  = sys.Stat_t{Mode: fs.ModeDir | 0o555, Nlink: 2, Ino: 1}
	nullStat = sys.Stat_t{Mode: fs.ModeDevice | fs.ModeCharDevice | 0o666, Nlink: 1, Ino: 2}
)

// nullFile reads as empty and swallows writes.
type nullFile struct {
	experimentalsys.UnimplementedFile
}

func (nullFile) Stat() (sys.Stat_t, experimentalsys.Errno)             { return nullStat, 0 }
func (nullFile) Ino() (sys.Inode, experimentalsys.Errno)               { return nullStat.Ino, 0 }
func (nullFile) Read([]byte) (int, experimentalsys.Errno)              { return 0, 0 }
func (nullFile) Pread([]byte, int64) (int, experimentalsys.Errno)      { return 0, 0 }
func (nullFile) Write(p []byte) (int, experimentalsys.Errno)           { return len(p), 0 }
func (nullFile) Pwrite(p []byte, _ int64) (int, experimentalsys.Errno) { return len(p), 0 }

// Seek has wazero's signature (an Errno, not an error); go vet's
// stdmethods check is off for that reason (see the Makefile).
func (nullFile) Seek(int64, int) (int64, experimentalsys.Errno) { return 0, 0 }
func (nullFile) Truncate(int64) experimentalsys.Errno           { return 0 }
func (nullFile) Sync() experimentalsys.Errno                    { return 0 }
func (nullFile) Datasync() experimentalsys.Errno                { return 0 }

// devDir lists /dev.
type devDir struct {
	experimentalsys.UnimplementedFile
	read bool
}

func (*devDir) IsDir() (bool, experimentalsys.Errno)             { return true, 0 }
func (*devDir) Stat() (sys.Stat_t, experimentalsys.Errno)        { return dirStat, 0 }
func (*devDir) Ino() (sys.Inode, experimentalsys.Errno)          { return dirStat.Ino, 0 }
func (d *devDir) Seek(int64, int) (int64, experimentalsys.Errno) { d.read = false; return 0, 0 }

func (d *devDir) Readdir(int) ([]experimentalsys.Dirent, experimentalsys.Errno) {
	if d.read {
		return nil, 0
	}
	d.read = true
	return []experimentalsys.Dirent{{Name: "null", Ino: nullStat.Ino, Type: fs.ModeDevice | fs.ModeCharDevice}}, 0
}
