package sandbox_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/eryx-dev/eryx/runtime/sandbox"
)

func TestTimeoutLimit(t *testing.T) {
	t.Parallel()
	res, err := engine.Execute(context.Background(), "print('started')\nwhile True:\n    pass",
		sandbox.ExecOptions{Limits: sandbox.Limits{Timeout: 300 * time.Millisecond}})
	if !errors.Is(err, sandbox.ErrTimeout) {
		t.Fatalf("err = %v, want ErrTimeout", err)
	}
	if res.Status != sandbox.StatusTimeout || res.Stdout != "started\n" {
		t.Fatalf("result %+v", res)
	}
}

func TestDefaultLimitsAreOn(t *testing.T) {
	t.Parallel()
	l := engine.Limits()
	if l.Timeout != sandbox.DefaultTimeout || l.MemoryBytes != sandbox.DefaultMemoryBytes ||
		l.OutputBytes != sandbox.DefaultOutputBytes || l.CodeBytes != sandbox.DefaultCodeBytes || l.TmpBytes != sandbox.DefaultTmpBytes {
		t.Fatalf("engine limits %+v are not the defaults", l)
	}
	if sandbox.DefaultTimeout != 30*time.Second || sandbox.DefaultMemoryBytes != 128<<20 || sandbox.DefaultOutputBytes != 1<<20 {
		t.Fatal("documented defaults changed")
	}
}

func TestMemoryLimit(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		code string
	}{
		{"one big allocation", "x = bytearray(200 * 1024 * 1024)"},
		{"growing list", "chunks = []\nwhile True:\n    chunks.append(bytearray(1024 * 1024))"},
		{"string doubling", "s = 'x'\nwhile True:\n    s = s + s"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			limit := uint64(64 << 20)
			res, err := engine.Execute(context.Background(), tt.code+"\n",
				sandbox.ExecOptions{Limits: sandbox.Limits{MemoryBytes: limit, Timeout: 20 * time.Second}})
			if err != nil {
				t.Fatalf("err = %v (result %+v)", err, res)
			}
			if res.Status != sandbox.StatusError || res.Error.Type != "MemoryError" {
				t.Fatalf("status %q error %+v", res.Status, res.Error)
			}
			if !res.Stats.MemoryLimitHit || res.Stats.PeakMemoryBytes > limit {
				t.Fatalf("stats %+v", res.Stats)
			}
		})
	}
	// The same allocation fits a bigger sandbox.
	res := run(t, "x = bytearray(200 * 1024 * 1024)\nprint(len(x))", sandbox.ExecOptions{Limits: sandbox.Limits{MemoryBytes: 512 << 20}})
	if res.Status != sandbox.StatusOK || res.Stats.PeakMemoryBytes < 200<<20 {
		t.Fatalf("result %+v", res)
	}
}

func TestOutputLimit(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		code string
	}{
		{"one big print", "print('x' * 100000)"},
		{"flood", "import sys\nfor i in range(100000):\n    print(i)\n    print(i, file=sys.stderr)"},
		{"multibyte", "print('é' * 100000)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			const limit = 4096
			var streamed int
			res := run(t, tt.code, sandbox.ExecOptions{
				Limits:   sandbox.Limits{OutputBytes: limit},
				OnOutput: func(_ sandbox.Stream, b []byte) { streamed += len(b) },
			})
			if res.Status != sandbox.StatusOK || !res.OutputTruncated {
				t.Fatalf("status %q truncated %v", res.Status, res.OutputTruncated)
			}
			got := len(res.Stdout) + len(res.Stderr)
			if got > limit || got < limit-4 || streamed != got {
				t.Fatalf("kept %d bytes, streamed %d, limit %d", got, streamed, limit)
			}
			if !strings.HasPrefix(res.Stdout, "x") && !strings.HasPrefix(res.Stdout, "0") && !strings.HasPrefix(res.Stdout, "é") {
				t.Fatalf("stdout starts with %q", res.Stdout[:10])
			}
		})
	}
	res := run(t, "print('short')", sandbox.ExecOptions{Limits: sandbox.Limits{OutputBytes: 4096}})
	if res.OutputTruncated {
		t.Fatal("short output flagged as truncated")
	}
}

func TestCodeSizeDefaultLimit(t *testing.T) {
	t.Parallel()
	code := "x = 1\n" + strings.Repeat("#", sandbox.DefaultCodeBytes)
	if _, err := engine.Execute(context.Background(), code, sandbox.ExecOptions{}); !errors.Is(err, sandbox.ErrCodeTooLarge) {
		t.Fatalf("err = %v, want ErrCodeTooLarge", err)
	}
}

func TestTmpLimit(t *testing.T) {
	t.Parallel()
	// ENOSPC, as a full tmpfs on Linux says (not the EIO wazero passes on).
	res := run(t, "import errno\ntry:\n    with open('/tmp/big', 'wb') as f:\n        for _ in range(100):\n            f.write(b'x' * 65536)\nexcept OSError as e:\n    import os\n    print('full at', os.path.getsize('/tmp/big'), e.errno == errno.ENOSPC)",
		sandbox.ExecOptions{Limits: sandbox.Limits{TmpBytes: 1 << 20}})
	if res.Stdout != "full at 1048576 True\n" {
		t.Fatalf("stdout %q, error %+v", res.Stdout, res.Error)
	}
}
