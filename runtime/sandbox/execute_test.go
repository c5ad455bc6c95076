package sandbox_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eryx-dev/eryx/runtime/sandbox"
)

func TestExecuteOutcomes(t *testing.T) {
	t.Parallel()
	exit := func(n int) *int { return &n }
	tests := []struct {
		name       string
		code       string
		status     sandbox.Status
		stdout     string
		stderr     string
		value      string
		errType    string
		errLine    int
		errMessage string
		exitCode   *int
	}{
		{name: "print", code: "print('hi')", status: sandbox.StatusOK, stdout: "hi\n"},
		{name: "empty", code: "", status: sandbox.StatusOK},
		{name: "whitespace", code: "\n\n  \n", status: sandbox.StatusOK},
		{name: "stderr", code: "import sys\nprint('oops', file=sys.stderr)", status: sandbox.StatusOK, stderr: "oops\n"},
		{name: "result value", code: "result = {'a': [1, 2.5, None, 'x']}", status: sandbox.StatusOK, value: `{"a":[1,2.5,null,"x"]}`},
		{name: "result scalar", code: "result = 6 * 7", status: sandbox.StatusOK, value: `42`},
		{name: "exception line", code: "x = 1\ny = 2\nraise ValueError('bad value')\n", status: sandbox.StatusError,
			errType: "ValueError", errLine: 3, errMessage: "bad value"},
		{name: "nested exception line", code: "def f():\n    return {}['k']\n\nf()\n", status: sandbox.StatusError,
			errType: "KeyError", errLine: 2, errMessage: "'k'"},
		{name: "module exception type", code: "import json\njson.loads('{')", status: sandbox.StatusError,
			errType: "json.decoder.JSONDecodeError", errLine: 2},
		{name: "syntax error", code: "x = 1\ndef f(:\n", status: sandbox.StatusError, errType: "SyntaxError", errLine: 2},
		{name: "sys.exit(3)", code: "import sys\nprint('before')\nsys.exit(3)\nprint('after')", status: sandbox.StatusExit,
			stdout: "before\n", exitCode: exit(3)},
		{name: "raise SystemExit", code: "raise SystemExit", status: sandbox.StatusExit, exitCode: exit(0)},
		{name: "sys.exit(str)", code: "import sys; sys.exit('fatal')", status: sandbox.StatusExit, stderr: "fatal\n", exitCode: exit(1)},
		{name: "top-level await", code: "import asyncio\nasync def f():\n    await asyncio.sleep(0.01)\n    return 5\nresult = await f()",
			status: sandbox.StatusOK, value: "5"},
		{name: "gather", code: "import asyncio\nasync def f(i):\n    await asyncio.sleep(0.05)\n    return i\nresult = await asyncio.gather(*(f(i) for i in range(5)))",
			status: sandbox.StatusOK, value: "[0,1,2,3,4]"},
		{name: "asyncio.run", code: "import asyncio\nasync def main():\n    return 'ran'\nresult = asyncio.run(main())", status: sandbox.StatusOK, value: `"ran"`},
		{name: "wait_for timeout", code: "import asyncio\ntry:\n    await asyncio.wait_for(asyncio.sleep(10), 0.05)\nexcept asyncio.TimeoutError:\n    result = 'timed out'",
			status: sandbox.StatusOK, value: `"timed out"`},
		{name: "deadlock", code: "import asyncio\nawait asyncio.get_running_loop().create_future()", status: sandbox.StatusError, errType: "RuntimeError"},
		{name: "unserialisable result", code: "result = object()", status: sandbox.StatusOK},
		{name: "unicode", code: "print('héllo ✓ 🐍')", status: sandbox.StatusOK, stdout: "héllo ✓ 🐍\n"},
		{name: "os._exit", code: "import os\nos._exit(5)", status: sandbox.StatusExit, exitCode: exit(5)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			res := run(t, tt.code, sandbox.ExecOptions{})
			if res.Status != tt.status {
				t.Fatalf("status = %q, want %q (error %+v, stderr %q)", res.Status, tt.status, res.Error, res.Stderr)
			}
			if res.Stdout != tt.stdout {
				t.Errorf("stdout = %q, want %q", res.Stdout, tt.stdout)
			}
			if res.Stderr != tt.stderr {
				t.Errorf("stderr = %q, want %q", res.Stderr, tt.stderr)
			}
			if tt.value != "" && string(res.Value) != tt.value {
				t.Errorf("value = %s, want %s", res.Value, tt.value)
			}
			if tt.value == "" && res.Value != nil {
				t.Errorf("value = %s, want none", res.Value)
			}
			if tt.errType != "" {
				if res.Error == nil {
					t.Fatalf("no error, want %s", tt.errType)
				}
				if res.Error.Type != tt.errType || res.Error.Line != tt.errLine {
					t.Errorf("error = %s at line %d, want %s at line %d", res.Error.Type, res.Error.Line, tt.errType, tt.errLine)
				}
				if tt.errMessage != "" && res.Error.Message != tt.errMessage {
					t.Errorf("message = %q, want %q", res.Error.Message, tt.errMessage)
				}
				if !strings.Contains(res.Error.Traceback, tt.errType) {
					t.Errorf("traceback lacks the type:\n%s", res.Error.Traceback)
				}
				if strings.Contains(res.Error.Traceback, "_eryx") {
					t.Errorf("traceback shows the runtime's own frames:\n%s", res.Error.Traceback)
				}
			} else if res.Error != nil {
				t.Errorf("unexpected error %+v", res.Error)
			}
			if (tt.exitCode == nil) != (res.ExitCode == nil) || (tt.exitCode != nil && *tt.exitCode != *res.ExitCode) {
				t.Errorf("exit code = %v, want %v", res.ExitCode, tt.exitCode)
			}
		})
	}
}

func TestTracebackShowsUserSource(t *testing.T) {
	t.Parallel()
	res := run(t, "def inner():\n    raise RuntimeError('deep')\n\ndef outer():\n    inner()\n\nouter()\n", sandbox.ExecOptions{})
	tb := res.Error.Traceback
	for _, want := range []string{"line 7, in <module>", "line 5, in outer", "line 2, in inner", "raise RuntimeError('deep')"} {
		if !strings.Contains(tb, want) {
			t.Errorf("traceback lacks %q:\n%s", want, tb)
		}
	}
}

func TestUnserialisableResultIsExplained(t *testing.T) {
	t.Parallel()
	res := run(t, "class Thing:\n    def __repr__(self):\n        return 'Thing()'\nresult = Thing()", sandbox.ExecOptions{})
	if res.Value != nil || !strings.Contains(res.ValueError, "not JSON-serialisable") {
		t.Fatalf("value %s, value error %q", res.Value, res.ValueError)
	}
}

func TestRejectedCode(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		code   string
		limits sandbox.Limits
		want   error
	}{
		{"nul byte", "print(1)\x00", sandbox.Limits{}, sandbox.ErrInvalidCode},
		{"too large", strings.Repeat("#", 2048), sandbox.Limits{CodeBytes: 1024}, sandbox.ErrCodeTooLarge},
		{"negative timeout", "pass", sandbox.Limits{Timeout: -time.Second}, sandbox.ErrInvalidLimits},
		{"tiny memory", "pass", sandbox.Limits{MemoryBytes: 1 << 20}, sandbox.ErrInvalidLimits},
		{"huge memory", "pass", sandbox.Limits{MemoryBytes: 64 << 30}, sandbox.ErrInvalidLimits},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			res, err := engine.Execute(context.Background(), tt.code, sandbox.ExecOptions{Limits: tt.limits})
			if !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
			if res != nil {
				t.Fatalf("result %+v for rejected code", res)
			}
		})
	}
}

func TestOutputIsStreamed(t *testing.T) {
	t.Parallel()
	first := make(chan string, 1)
	var chunks []string
	done := make(chan *sandbox.Result, 1)
	go func() {
		res, _ := engine.Execute(context.Background(), "import time\nprint('one', flush=True)\ntime.sleep(0.5)\nprint('two')",
			sandbox.ExecOptions{OnOutput: func(s sandbox.Stream, b []byte) {
				if len(chunks) == 0 {
					first <- string(b)
				}
				chunks = append(chunks, s.String()+":"+string(b))
			}})
		done <- res
	}()
	select {
	case got := <-first:
		if !strings.HasPrefix(got, "one") {
			t.Fatalf("first chunk %q", got)
		}
	case <-done:
		t.Fatal("no output before the execution ended")
	}
	res := <-done
	if got := strings.Join(chunks, "|"); got != "stdout:one|stdout:\n|stdout:two|stdout:\n" {
		t.Fatalf("chunks %q", got)
	}
	if res.Stdout != "one\ntwo\n" {
		t.Fatalf("stdout %q", res.Stdout)
	}
}

func TestSessionNamespacePersists(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	sb, err := engine.NewSandbox(ctx, sandbox.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sb.Close(ctx) }()
	steps := []struct{ code, stdout string }{
		{"x = 41\ndef inc(v):\n    return v + 1", ""},
		{"import math\nprint(inc(x))", "42\n"},
		{"print(math.floor(2.5), x)", "2 41\n"},
	}
	for _, s := range steps {
		res, err := sb.Execute(ctx, s.code, sandbox.ExecOptions{Session: true})
		if err != nil || res.Status != sandbox.StatusOK || res.Stdout != s.stdout {
			t.Fatalf("%q: err %v, result %+v", s.code, err, res)
		}
	}
	// Without Session, the same sandbox gets a clean namespace.
	res, err := sb.Execute(ctx, "print('x' in globals())", sandbox.ExecOptions{})
	if err != nil || res.Stdout != "False\n" {
		t.Fatalf("err %v, result %+v", err, res)
	}
}

func TestBusySandbox(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	sb, err := engine.NewSandbox(ctx, sandbox.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sb.Close(ctx) }()
	running := make(chan struct{})
	var once sync.Once
	go func() {
		_, _ = sb.Execute(ctx, "import time\nprint('go')\ntime.sleep(0.3)", sandbox.ExecOptions{
			OnOutput: func(sandbox.Stream, []byte) { once.Do(func() { close(running) }) },
		})
	}()
	<-running
	if _, err := sb.Execute(ctx, "pass", sandbox.ExecOptions{}); !errors.Is(err, sandbox.ErrBusy) {
		t.Fatalf("err = %v, want ErrBusy", err)
	}
}

func TestClosedSandbox(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	sb, err := engine.NewSandbox(ctx, sandbox.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if err := sb.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if err := sb.Close(ctx); err != nil {
		t.Fatalf("second close: %v", err)
	}
	if _, err := sb.Execute(ctx, "pass", sandbox.ExecOptions{}); !errors.Is(err, sandbox.ErrSandboxClosed) {
		t.Fatalf("err = %v, want ErrSandboxClosed", err)
	}
}
