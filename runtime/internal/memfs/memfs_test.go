package memfs

import (
	"bytes"
	"io"
	"math"
	"testing"

	experimentalsys "github.com/tetratelabs/wazero/experimental/sys"
)

func TestFileOperations(t *testing.T) {
	f := New(100)
	if errno := f.Mkdir("d", 0o755); errno != 0 {
		t.Fatal(errno)
	}
	fl, errno := f.OpenFile("d/a", experimentalsys.O_RDWR|experimentalsys.O_CREAT, 0o644)
	if errno != 0 {
		t.Fatal(errno)
	}
	if n, errno := fl.Write([]byte("hello")); n != 5 || errno != 0 {
		t.Fatal(n, errno)
	}
	if _, errno := fl.Seek(0, io.SeekStart); errno != 0 {
		t.Fatal(errno)
	}
	buf := make([]byte, 10)
	if n, _ := fl.Read(buf); string(buf[:n]) != "hello" {
		t.Fatalf("read %q", buf[:n])
	}
	if f.Used() != 5 {
		t.Fatalf("used %d", f.Used())
	}

	tests := []struct {
		name string
		op   func() experimentalsys.Errno
		want experimentalsys.Errno
	}{
		{"exclusive create of existing", func() experimentalsys.Errno {
			_, e := f.OpenFile("d/a", experimentalsys.O_CREAT|experimentalsys.O_EXCL|experimentalsys.O_WRONLY, 0)
			return e
		}, experimentalsys.EEXIST},
		{"open missing", func() experimentalsys.Errno { _, e := f.OpenFile("nope", experimentalsys.O_RDONLY, 0); return e }, experimentalsys.ENOENT},
		{"create in missing dir", func() experimentalsys.Errno {
			_, e := f.OpenFile("x/y", experimentalsys.O_CREAT|experimentalsys.O_WRONLY, 0)
			return e
		}, experimentalsys.ENOENT},
		{"write a directory", func() experimentalsys.Errno { _, e := f.OpenFile("d", experimentalsys.O_WRONLY, 0); return e }, experimentalsys.EISDIR},
		{"rmdir non-empty", func() experimentalsys.Errno { return f.Rmdir("d") }, experimentalsys.ENOTEMPTY},
		{"unlink a directory", func() experimentalsys.Errno { return f.Unlink("d") }, experimentalsys.EISDIR},
		{"mkdir existing", func() experimentalsys.Errno { return f.Mkdir("d", 0) }, experimentalsys.EEXIST},
		{"path through a file", func() experimentalsys.Errno { _, e := f.Stat("d/a/b"); return e }, experimentalsys.ENOTDIR},
		{"over quota", func() experimentalsys.Errno { _, e := fl.Write(make([]byte, 200)); return e }, experimentalsys.EIO},
		{"rename", func() experimentalsys.Errno { return f.Rename("d/a", "b") }, 0},
		{"renamed gone", func() experimentalsys.Errno { _, e := f.Stat("d/a"); return e }, experimentalsys.ENOENT},
		{"unlink frees quota", func() experimentalsys.Errno { return f.Unlink("b") }, 0},
		{"rmdir empty", func() experimentalsys.Errno { return f.Rmdir("d") }, 0},
	}
	for _, tt := range tests {
		if got := tt.op(); got != tt.want {
			t.Errorf("%s: errno %v, want %v", tt.name, got, tt.want)
		}
	}
	if f.Used() != 0 {
		t.Fatalf("used %d after unlinking everything", f.Used())
	}
}

func TestReaddir(t *testing.T) {
	f := New(1 << 10)
	for _, n := range []string{"b", "a", "c"} {
		fl, errno := f.OpenFile(n, experimentalsys.O_CREAT|experimentalsys.O_WRONLY, 0)
		if errno != 0 {
			t.Fatal(errno)
		}
		_ = fl.Close()
	}
	d, errno := f.OpenFile(".", experimentalsys.O_RDONLY, 0)
	if errno != 0 {
		t.Fatal(errno)
	}
	first, _ := d.Readdir(2)
	rest, _ := d.Readdir(0)
	if len(first) != 2 || first[0].Name != "a" || len(rest) != 1 || rest[0].Name != "c" {
		t.Fatalf("%v %v", first, rest)
	}
}

// Offsets and sizes come from the guest: every one must be range-checked
// before it reaches slice arithmetic or an allocation. Unchecked, a pwrite
// at 2**63-1 panicked the host (the sandbox crashed) and an ftruncate to
// 2**40 was a fatal out-of-memory of the whole worker process.
func TestGuestOffsetsAreRangeChecked(t *testing.T) {
	const quota = 1 << 16
	f := New(quota)
	fl, errno := f.OpenFile("a", experimentalsys.O_RDWR|experimentalsys.O_CREAT, 0)
	if errno != 0 {
		t.Fatal(errno)
	}
	if _, errno := fl.Write([]byte("abc")); errno != 0 {
		t.Fatal(errno)
	}
	buf := make([]byte, 8)
	tests := []struct {
		name string
		op   func() experimentalsys.Errno
		want experimentalsys.Errno
	}{
		{"pwrite end past max off_t", func() experimentalsys.Errno { _, e := fl.Pwrite([]byte("X"), math.MaxInt64); return e }, experimentalsys.EINVAL},
		{"pwrite end one past max off_t", func() experimentalsys.Errno { _, e := fl.Pwrite([]byte("XY"), math.MaxInt64-1); return e }, experimentalsys.EINVAL},
		{"pwrite negative", func() experimentalsys.Errno { _, e := fl.Pwrite([]byte("X"), -1); return e }, experimentalsys.EINVAL},
		{"pwrite at max off_t - 1 (over quota)", func() experimentalsys.Errno { _, e := fl.Pwrite([]byte("X"), math.MaxInt64-1); return e }, experimentalsys.EIO},
		{"pwrite at 2**40 (over quota)", func() experimentalsys.Errno { _, e := fl.Pwrite([]byte("X"), 1<<40); return e }, experimentalsys.EIO},
		{"pread end past max off_t", func() experimentalsys.Errno { _, e := fl.Pread(buf, math.MaxInt64); return e }, experimentalsys.EINVAL},
		{"pread negative", func() experimentalsys.Errno { _, e := fl.Pread(buf, -1); return e }, experimentalsys.EINVAL},
		{"pread far past the end", func() experimentalsys.Errno { _, e := fl.Pread(buf, 1<<62); return e }, 0},
		{"truncate to max off_t", func() experimentalsys.Errno { return fl.Truncate(math.MaxInt64) }, experimentalsys.EIO},
		{"truncate to 2**40", func() experimentalsys.Errno { return fl.Truncate(1 << 40) }, experimentalsys.EIO},
		{"truncate just over quota", func() experimentalsys.Errno { return fl.Truncate(quota + 1) }, experimentalsys.EIO},
		{"truncate negative", func() experimentalsys.Errno { return fl.Truncate(-1) }, experimentalsys.EINVAL},
		{"seek to max off_t", func() experimentalsys.Errno { _, e := fl.Seek(math.MaxInt64, io.SeekStart); return e }, 0},
		{"write at max off_t", func() experimentalsys.Errno { _, e := fl.Write([]byte("X")); return e }, experimentalsys.EINVAL},
		{"seek current past max off_t", func() experimentalsys.Errno { _, e := fl.Seek(1, io.SeekCurrent); return e }, experimentalsys.EINVAL},
		{"seek end past max off_t", func() experimentalsys.Errno { _, e := fl.Seek(math.MaxInt64, io.SeekEnd); return e }, experimentalsys.EINVAL},
		{"seek negative", func() experimentalsys.Errno { _, e := fl.Seek(-4, io.SeekEnd); return e }, experimentalsys.EINVAL},
	}
	for _, tt := range tests {
		if got := tt.op(); got != tt.want {
			t.Errorf("%s: errno %v, want %v", tt.name, got, tt.want)
		}
	}
	if f.Used() != 3 {
		t.Fatalf("used %d after refused operations, want 3", f.Used())
	}
	// Up to the quota still works.
	if errno := fl.Truncate(quota); errno != 0 || f.Used() != quota {
		t.Fatalf("truncate to the quota: %v, used %d", errno, f.Used())
	}
}

// Bytes cut off by a truncate read back as zeros when the file grows
// again, as on Linux, although the memory behind them is reused.
func TestRegrowReadsZeros(t *testing.T) {
	f := New(1 << 10)
	fl, _ := f.OpenFile("a", experimentalsys.O_RDWR|experimentalsys.O_CREAT, 0)
	if _, errno := fl.Write([]byte("secret")); errno != 0 {
		t.Fatal(errno)
	}
	if errno := fl.Truncate(1); errno != 0 {
		t.Fatal(errno)
	}
	if _, errno := fl.Pwrite([]byte("!"), 5); errno != 0 {
		t.Fatal(errno)
	}
	buf := make([]byte, 6)
	if n, _ := fl.Pread(buf, 0); !bytes.Equal(buf[:n], []byte("s\x00\x00\x00\x00!")) {
		t.Fatalf("read %q after shrink and regrow", buf[:n])
	}
}

// rename(2) of a directory into its own subtree is EINVAL and moves
// nothing: the tree stays reachable and its bytes stay accounted for.
func TestRenameIntoOwnSubdirectory(t *testing.T) {
	f := New(100)
	for _, d := range []string{"a", "a/x"} {
		if errno := f.Mkdir(d, 0); errno != 0 {
			t.Fatal(errno)
		}
	}
	fl, _ := f.OpenFile("a/x/f", experimentalsys.O_CREAT|experimentalsys.O_WRONLY, 0)
	if _, errno := fl.Write([]byte("data")); errno != 0 {
		t.Fatal(errno)
	}
	for _, to := range []string{"a/x/b", "a/x", "a/x/y/z"} {
		want := experimentalsys.EINVAL
		if to == "a/x/y/z" {
			want = experimentalsys.ENOENT // the target's parent is looked up first
		}
		if errno := f.Rename("a", to); errno != want {
			t.Errorf("rename a -> %s: %v, want %v", to, errno, want)
		}
	}
	if _, errno := f.Stat("a/x/f"); errno != 0 || f.Used() != 4 {
		t.Fatalf("tree after refused renames: %v, used %d", errno, f.Used())
	}
	if errno := f.Rename("a/x", "a/x"); errno != 0 {
		t.Errorf("rename to itself: %v", errno)
	}
}

func TestTrailingSlashAndTimes(t *testing.T) {
	f := New(100)
	if _, errno := f.OpenFile("file", experimentalsys.O_CREAT|experimentalsys.O_WRONLY, 0); errno != 0 {
		t.Fatal(errno)
	}
	if errno := f.Mkdir("dir", 0); errno != 0 {
		t.Fatal(errno)
	}
	open := func(p string, flag experimentalsys.Oflag) experimentalsys.Errno {
		_, e := f.OpenFile(p, flag, 0)
		return e
	}
	tests := []struct {
		name string
		got  experimentalsys.Errno
		want experimentalsys.Errno
	}{
		{"create missing/", open("missing/", experimentalsys.O_CREAT|experimentalsys.O_WRONLY), experimentalsys.EISDIR},
		{"create file/", open("file/", experimentalsys.O_CREAT|experimentalsys.O_WRONLY), experimentalsys.EISDIR},
		{"open file/", open("file/", experimentalsys.O_RDONLY), experimentalsys.ENOTDIR},
		{"open dir/", open("dir/", experimentalsys.O_RDONLY), 0},
		{"unlink file/", f.Unlink("file/"), experimentalsys.ENOTDIR},
		{"rename file to x/", f.Rename("file", "x/"), experimentalsys.ENOTDIR},
		{"readlink file", func() experimentalsys.Errno { _, e := f.Readlink("file"); return e }(), experimentalsys.EINVAL},
		{"readlink missing", func() experimentalsys.Errno { _, e := f.Readlink("missing"); return e }(), experimentalsys.ENOENT},
		{"mkdir mount point", f.Mkdir(".", 0), experimentalsys.EEXIST},
		{"unlink mount point", f.Unlink("."), experimentalsys.EISDIR},
		{"utimens", f.Utimens("file", 1500, 4500), 0},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("%s: %v, want %v", tt.name, tt.got, tt.want)
		}
	}
	st, _ := f.Stat("file")
	if st.Atim != 1500 || st.Mtim != 4500 {
		t.Errorf("after utimens(1500, 4500): atim %d mtim %d", st.Atim, st.Mtim)
	}
	if errno := f.Utimens("file", experimentalsys.UTIME_OMIT, 7); errno != 0 {
		t.Fatal(errno)
	}
	if st, _ = f.Stat("file"); st.Atim != 1500 || st.Mtim != 7 {
		t.Errorf("UTIME_OMIT for atime: atim %d mtim %d", st.Atim, st.Mtim)
	}
}
