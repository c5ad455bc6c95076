package sandbox_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eryx-dev/eryx/internal/check"
	"github.com/eryx-dev/eryx/runtime/sandbox"
)

func testCallbacks(calls *atomic.Int64) *sandbox.LocalCallbacks {
	return sandbox.NewCallbacks(
		sandbox.Callback{
			CallbackSpec: sandbox.CallbackSpec{Name: "get_time", Description: "Current Unix time in seconds.",
				Schema: json.RawMessage(`{"type":"object","properties":{}}`)},
			Func: func(context.Context, json.RawMessage) (json.RawMessage, error) {
				calls.Add(1)
				return json.Marshal(time.Now().Unix())
			},
		},
		sandbox.Callback{
			CallbackSpec: sandbox.CallbackSpec{Name: "echo", Description: "Returns its message.",
				Schema: json.RawMessage(`{"type":"object","properties":{"message":{"type":"string"},"times":{"type":"integer","minimum":1}},"required":["message"],"additionalProperties":false}`)},
			Func: func(_ context.Context, args json.RawMessage) (json.RawMessage, error) {
				calls.Add(1)
				var a struct {
					Message string `json:"message"`
					Times   int    `json:"times"`
				}
				if err := json.Unmarshal(args, &a); err != nil {
					return nil, err
				}
				if a.Times == 0 {
					a.Times = 1
				}
				return json.Marshal(strings.Repeat(a.Message, a.Times))
			},
		},
		sandbox.Callback{
			CallbackSpec: sandbox.CallbackSpec{Name: "slow", Description: "Sleeps for ms milliseconds.",
				Schema: json.RawMessage(`{"type":"object","properties":{"ms":{"type":"integer"}}}`)},
			Func: func(ctx context.Context, args json.RawMessage) (json.RawMessage, error) {
				calls.Add(1)
				var a struct{ Ms int }
				_ = json.Unmarshal(args, &a)
				select {
				case <-time.After(time.Duration(a.Ms) * time.Millisecond):
					return json.Marshal(a.Ms)
				case <-ctx.Done():
					return nil, ctx.Err()
				}
			},
		},
		sandbox.Callback{
			CallbackSpec: sandbox.CallbackSpec{Name: "http.get", Description: "Pretend HTTP GET.",
				Schema: json.RawMessage(`{"type":"object","properties":{"url":{"type":"string"}},"required":["url"]}`)},
			Func: func(_ context.Context, args json.RawMessage) (json.RawMessage, error) {
				return args, nil
			},
		},
		sandbox.Callback{
			CallbackSpec: sandbox.CallbackSpec{Name: "fail", Description: "Always fails."},
			Func: func(_ context.Context, args json.RawMessage) (json.RawMessage, error) {
				var a struct{ Kind string }
				_ = json.Unmarshal(args, &a)
				if a.Kind == "value" {
					return nil, &sandbox.CallbackError{Type: "ValueError", Message: "bad input"}
				}
				if a.Kind == "custom" {
					return nil, &sandbox.CallbackError{Type: "QuotaExceeded", Message: "try later"}
				}
				return nil, errors.New("backend exploded")
			},
		},
		sandbox.Callback{
			CallbackSpec: sandbox.CallbackSpec{Name: "big", Description: "Returns n bytes."},
			Func: func(_ context.Context, args json.RawMessage) (json.RawMessage, error) {
				var a struct{ N int }
				_ = json.Unmarshal(args, &a)
				return json.Marshal(strings.Repeat("x", a.N))
			},
		},
		sandbox.Callback{
			CallbackSpec: sandbox.CallbackSpec{Name: "print", Description: "Would shadow a builtin."},
			Func: func(context.Context, json.RawMessage) (json.RawMessage, error) {
				return json.Marshal("via invoke")
			},
		},
	)
}

func TestCallbacks(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		code   string
		stdout string
		value  string
		limits sandbox.CallbackLimits
	}{
		{name: "no arguments", code: "t = await get_time()\nprint(type(t).__name__)", stdout: "int\n"},
		{name: "keyword", code: "result = await echo(message='hi')", value: `"hi"`},
		{name: "positional in schema order", code: "result = await echo('ab', 3)", value: `"ababab"`},
		{name: "dotted namespace", code: "result = await http.get(url='https://example.com')", value: `{"url":"https://example.com"}`},
		{name: "invoke", code: "result = await invoke('echo', message='x')", value: `"x"`},
		{name: "invoke shadowing name", code: "result = await invoke('print')", value: `"via invoke"`},
		{name: "builtin not shadowed", code: "print('still the builtin')", stdout: "still the builtin\n"},
		{name: "list_callbacks", code: "result = sorted(c['name'] for c in list_callbacks())",
			value: `["big","echo","fail","get_time","http.get","print","slow"]`},
		{name: "list has schema and description", code: "c = [c for c in list_callbacks() if c['name'] == 'echo'][0]\nresult = [c['description'], c['parameters_schema']['required']]",
			value: `["Returns its message.",["message"]]`},
		{name: "missing argument", code: "try:\n    await echo()\nexcept TypeError as e:\n    result = str(e)", value: `"echo(): missing required argument 'message'"`},
		{name: "wrong type", code: "try:\n    await echo(message=5)\nexcept TypeError as e:\n    result = str(e)", value: `"echo(): argument 'message': expected string, got int"`},
		{name: "unexpected argument", code: "try:\n    await echo(message='a', color='red')\nexcept TypeError as e:\n    result = str(e)", value: `"echo(): unexpected argument 'color'"`},
		{name: "too many positional", code: "try:\n    await echo('a', 1, 2)\nexcept TypeError as e:\n    result = str(e)", value: `"echo() takes 2 positional arguments but 3 were given"`},
		{name: "minimum", code: "try:\n    await echo('a', 0)\nexcept TypeError as e:\n    result = str(e)", value: `"echo(): argument 'times': 0 is below the minimum 1"`},
		{name: "host ValueError", code: "try:\n    await fail(kind='value')\nexcept ValueError as e:\n    result = str(e)", value: `"bad input"`},
		{name: "host custom error", code: "import eryx\ntry:\n    await fail(kind='custom')\nexcept eryx.CallbackError as e:\n    result = [e.type, e.message]", value: `["QuotaExceeded","try later"]`},
		{name: "host plain error", code: "import eryx\ntry:\n    await fail()\nexcept eryx.CallbackError as e:\n    result = e.message", value: `"backend exploded"`},
		{name: "unknown callback", code: "try:\n    await invoke('nope')\nexcept NameError as e:\n    result = 'NameError'", value: `"NameError"`},
		{name: "per-call timeout", code: "import eryx\ntry:\n    await slow(ms=2000)\nexcept eryx.CallbackTimeout as e:\n    result = isinstance(e, TimeoutError)",
			value: "true", limits: sandbox.CallbackLimits{Timeout: 100 * time.Millisecond}},
		{name: "invocation limit", code: "import eryx\nn = 0\ntry:\n    for i in range(10):\n        await get_time()\n        n += 1\nexcept eryx.CallbackLimitError:\n    result = n",
			value: "3", limits: sandbox.CallbackLimits{MaxInvocations: 3}},
		{name: "argument size limit", code: "import eryx\ntry:\n    await echo(message='x' * 5000)\nexcept eryx.CallbackLimitError as e:\n    result = 'limited'",
			value: `"limited"`, limits: sandbox.CallbackLimits{MaxArgBytes: 1024}},
		{name: "response size limit", code: "import eryx\ntry:\n    await big(n=5000)\nexcept eryx.CallbackLimitError as e:\n    result = 'limited'",
			value: `"limited"`, limits: sandbox.CallbackLimits{MaxResultBytes: 1024}},
		{name: "asyncio.wait_for on callback", code: "import asyncio\ntry:\n    await asyncio.wait_for(slow(ms=5000), 0.05)\nexcept asyncio.TimeoutError:\n    result = 'timed out'", value: `"timed out"`},
		{name: "callback from asyncio.run", code: "import asyncio\nasync def main():\n    return await echo(message='r')\nresult = asyncio.run(main())", value: `"r"`},
		{name: "tasks and sleep mixed", code: "import asyncio\nasync def a():\n    await asyncio.sleep(0.02)\n    return await echo(message='a')\nresult = await asyncio.gather(a(), echo(message='b'), slow(ms=30))", value: `["a","b",30]`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var calls atomic.Int64
			res := run(t, tt.code, sandbox.ExecOptions{Callbacks: testCallbacks(&calls), CallbackLimits: tt.limits})
			if res.Status != sandbox.StatusOK {
				t.Fatalf("status %s, error %+v", res.Status, res.Error)
			}
			if res.Stdout != tt.stdout {
				t.Errorf("stdout %q, want %q", res.Stdout, tt.stdout)
			}
			if tt.value != "" && string(res.Value) != tt.value {
				t.Errorf("value %s, want %s", res.Value, tt.value)
			}
		})
	}
}

// Five gathered callbacks must be in flight on the host at once: each one
// waits until all five have started, so run one at a time they never end
// (the context bounds the failure).
func TestCallbacksRunConcurrently(t *testing.T) {
	t.Parallel()
	const n = 5
	var started atomic.Int64
	all := make(chan struct{})
	cbs := sandbox.NewCallbacks(sandbox.Callback{
		CallbackSpec: sandbox.CallbackSpec{Name: "meet"},
		Func: func(ctx context.Context, _ json.RawMessage) (json.RawMessage, error) {
			if started.Add(1) == n {
				close(all)
			}
			select {
			case <-all:
				return json.RawMessage(`true`), nil
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		},
	})
	ctx, cancel := context.WithTimeout(context.Background(), check.Bound)
	defer cancel()
	res, err := engine.Execute(ctx, "import asyncio\nresult = await asyncio.gather(*(meet() for _ in range(5)))", sandbox.ExecOptions{Callbacks: cbs})
	if err != nil || string(res.Value) != "[true,true,true,true,true]" {
		t.Fatalf("err %v, result %s (%+v): the callbacks did not run at once", err, res.Value, res.Error)
	}
}

func TestCallbackNamesRefused(t *testing.T) {
	t.Parallel()
	for _, name := range []string{"", "result", "invoke", "list_callbacks", "bad-name", "1x", "a..b", "eryx.x"} {
		if err := sandbox.CheckCallbackName(name); err == nil {
			t.Errorf("%q accepted", name)
		}
	}
	for _, name := range []string{"get_time", "http.get", "a.b.c"} {
		if err := sandbox.CheckCallbackName(name); err != nil {
			t.Errorf("%q refused: %v", name, err)
		}
	}
}

// Cancelling an execution while callbacks are in flight ends it promptly and
// cancels the callbacks' contexts.
func TestCancelDuringCallbacks(t *testing.T) {
	t.Parallel()
	var cancelled atomic.Int64
	var wg sync.WaitGroup
	cbs := sandbox.NewCallbacks(sandbox.Callback{
		CallbackSpec: sandbox.CallbackSpec{Name: "block"},
		Func: func(ctx context.Context, _ json.RawMessage) (json.RawMessage, error) {
			wg.Add(1)
			defer wg.Done()
			<-ctx.Done()
			cancelled.Add(1)
			return nil, ctx.Err()
		},
	})
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	res, err := engine.Execute(ctx, "import asyncio\nawait asyncio.gather(block(), block(), block())", sandbox.ExecOptions{Callbacks: cbs})
	if !errors.Is(err, sandbox.ErrTimeout) || res.Status != sandbox.StatusTimeout {
		t.Fatalf("err %v, result %+v", err, res)
	}
	wg.Wait()
	if cancelled.Load() != 3 {
		t.Fatalf("%d of 3 callback contexts cancelled", cancelled.Load())
	}
}

func TestTracing(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var events []sandbox.TraceEvent
	var calls atomic.Int64
	code := "def add(a, b):\n    return a + b\n\nx = add(1, 2)\ny = await echo(message='t')\ntry:\n    raise ValueError('boom')\nexcept ValueError:\n    pass\n"
	res := run(t, code, sandbox.ExecOptions{Callbacks: testCallbacks(&calls), OnTrace: func(ev sandbox.TraceEvent) {
		mu.Lock()
		events = append(events, ev)
		mu.Unlock()
	}})
	if res.Status != sandbox.StatusOK {
		t.Fatalf("%+v", res.Error)
	}
	var got []string
	for _, ev := range events {
		s := fmt.Sprintf("%s:%d", ev.Kind, ev.Line)
		switch ev.Kind {
		case "call", "return":
			s += ":" + ev.Function
		case "callback_start", "callback_end":
			s += ":" + ev.Callback
		case "exception":
			s += ":" + ev.Error.Type
		}
		got = append(got, s)
	}
	joined := strings.Join(got, " ")
	for _, want := range []string{"call:1:add", "line:2", "return:2:add", "line:4", "line:5", "callback_start:5:echo", "callback_end:5:echo", "exception:7:ValueError"} {
		if !strings.Contains(" "+joined+" ", " "+want+" ") && !strings.Contains(joined, want) {
			t.Errorf("missing %s in trace: %s", want, joined)
		}
	}
	for _, ev := range events {
		if ev.Kind == "callback_start" && string(ev.Args) != `{"message":"t"}` {
			t.Errorf("callback_start args %s", ev.Args)
		}
		if ev.Kind == "callback_end" && ev.DurationMs <= 0 {
			t.Errorf("callback_end duration %v", ev.DurationMs)
		}
	}
	// Only user code: no stdlib or runtime frames.
	for _, ev := range events {
		if ev.Kind == "call" && ev.Function != "add" && ev.Function != "<module>" {
			t.Errorf("traced a non-user function: %+v", ev)
		}
	}
}

func TestNoTracerWhenTracingIsOff(t *testing.T) {
	t.Parallel()
	res := run(t, "import sys\nresult = sys.gettrace() is None", sandbox.ExecOptions{})
	if string(res.Value) != "true" {
		t.Fatalf("a tracer is installed with tracing off: %s", res.Value)
	}
}

// Schema parameters may have any name, including the ones the runtime's own
// wrappers use (invoke's `name`, the wrappers' `args` and `kwargs`): the
// guest must pass them through as arguments instead of raising "got
// multiple values for argument".
func TestCallbackParameterNamesDoNotCollide(t *testing.T) {
	t.Parallel()
	cbs := sandbox.NewCallbacks(sandbox.Callback{
		CallbackSpec: sandbox.CallbackSpec{Name: "echo", Description: "Returns its arguments.",
			Schema: json.RawMessage(`{"type":"object","properties":{"name":{"type":"string"},"args":{"type":"string"},"kwargs":{"type":"string"},"spec":{"type":"string"}}}`)},
		Func: func(_ context.Context, args json.RawMessage) (json.RawMessage, error) { return args, nil },
	})
	tests := []struct {
		name, code, value string
	}{
		{"wrapper keyword name", "result = await echo(name='x')", `{"name":"x"}`},
		{"invoke keyword name", "result = await invoke('echo', name='x')", `{"name":"x"}`},
		{"wrapper positional name", "result = await echo('x')", `{"name":"x"}`},
		{"invoke positional name", "result = await invoke('echo', 'x', 'y')", `{"args":"y","name":"x"}`},
		{"all runtime names", "result = await echo(name='n', args='a', kwargs='k', spec='s')", `{"args":"a","kwargs":"k","name":"n","spec":"s"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			res := run(t, tt.code, sandbox.ExecOptions{Callbacks: cbs})
			if res.Status != sandbox.StatusOK {
				t.Fatalf("status %s, error %+v", res.Status, res.Error)
			}
			var got, want any
			if err := json.Unmarshal(res.Value, &got); err != nil {
				t.Fatalf("value %s: %v", res.Value, err)
			}
			_ = json.Unmarshal([]byte(tt.value), &want)
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("value %s, want %s", res.Value, tt.value)
			}
		})
	}
}
