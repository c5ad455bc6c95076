package sandbox_test

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/eryx-dev/eryx/internal/check"
	"github.com/eryx-dev/eryx/runtime/sandbox"
)

// tmpProbe runs each expression on an open file and prints its outcome:
// the value, or the errno's name (errno numbers differ between WASI and
// Linux; the names are what code checks).
const tmpProbe = `import errno, os
fd = os.open(PATH, os.O_RDWR | os.O_CREAT)
os.write(fd, b"abc")
for expr in CASES:
    try:
        out = repr(eval(expr))
    except OSError as e:
        out = errno.errorcode.get(e.errno, str(e.errno))
    except OverflowError:
        out = "OverflowError"
    print(expr, "=>", out)
`

func probeCode(path string, cases []string) string {
	quoted := make([]string, len(cases))
	for i, c := range cases {
		quoted[i] = fmt.Sprintf("%q", c)
	}
	return fmt.Sprintf("PATH = %q\nCASES = [%s]\n", path, strings.Join(quoted, ", ")) + tmpProbe
}

// Offsets and sizes a job passes to the file system reach host code; the
// guest must get the errors Linux gives, never crash the sandbox (a pwrite
// at 2**63-1 did) or the worker (an ftruncate to 2**40 was a fatal
// out-of-memory of the whole process). Compared with CPython on a real
// temporary file for the cases whose Linux answer does not depend on the
// file system.
func TestTmpOffsetsLikeLinux(t *testing.T) {
	t.Parallel()
	python, err := exec.LookPath("/usr/bin/python3.11")
	if err != nil {
		t.Fatalf("the native CPython the build uses is needed to compare with: %v", err)
	}
	cases := []string{
		"os.pwrite(fd, b'X', 2**63 - 1)",  // end past the largest off_t
		"os.pwrite(fd, b'XY', 2**63 - 2)", // end one past it
		"os.pwrite(fd, b'X', -1)",
		"os.pwrite(fd, b'X', 2**63)",
		"os.pread(fd, 10, 2**63 - 1)",
		"os.pread(fd, 1, -1)",
		"os.pread(fd, 4, 2**40)",
		"os.ftruncate(fd, -1)",
		"os.lseek(fd, -1, os.SEEK_SET)",
		"os.lseek(fd, -4, os.SEEK_END)",
		"os.pwrite(fd, b'Z', 1)",
		"os.pread(fd, 8, 0)",
	}
	ctx, cancel := context.WithTimeout(context.Background(), check.Bound)
	defer cancel()
	native, err := exec.CommandContext(ctx, python, "-c", probeCode(filepath.Join(t.TempDir(), "f"), cases)).CombinedOutput()
	if err != nil {
		t.Fatalf("native python: %v\n%s", err, native)
	}
	res, err := engine.Execute(ctx, probeCode("/tmp/f", cases), sandbox.ExecOptions{})
	if err != nil || res.Status != sandbox.StatusOK {
		t.Fatalf("sandbox: %v %s %+v", err, res.Status, res.Error)
	}
	if res.Stdout != string(native) {
		t.Errorf("sandbox and Linux differ:\nsandbox:\n%s\nlinux:\n%s", res.Stdout, native)
	}
	if !strings.Contains(string(native), "=> EINVAL") {
		t.Fatalf("the probe saw no EINVAL natively:\n%s", native)
	}

	// Where Linux's answer depends on the file system (ext4 says EFBIG,
	// tmpfs makes a sparse file), /tmp is out of space: ENOSPC, as a full
	// tmpfs says, without the host allocating the size asked for (wazero
	// passes it on as EIO; runtime/guest/wasi_errno.c turns it back).
	big := []string{
		"os.pwrite(fd, b'X', 2**63 - 2)",
		"os.pwrite(fd, b'X', 2**40)",
		"os.ftruncate(fd, 2**40)",
		"os.ftruncate(fd, 2**63 - 1)",
		"os.lseek(fd, 2**63 - 1, os.SEEK_SET) and os.write(fd, b'X')",
		"os.fstat(fd).st_size",
	}
	res, err = engine.Execute(ctx, probeCode("/tmp/f", big), sandbox.ExecOptions{})
	if err != nil || res.Status != sandbox.StatusOK {
		t.Fatalf("sandbox: %v %s %+v", err, res.Status, res.Error)
	}
	want := ""
	for i, c := range big {
		out := "ENOSPC"
		switch i {
		case 4:
			out = "EINVAL" // the write's end would pass the largest off_t
		case 5:
			out = "3"
		}
		want += c + " => " + out + "\n"
	}
	if res.Stdout != want {
		t.Errorf("got\n%s\nwant\n%s", res.Stdout, want)
	}
}
