package memfs

import (
	"io"
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
