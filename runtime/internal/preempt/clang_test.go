package preempt

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tetratelabs/wazero"
)

// The volatile store keeps -O2 from replacing the loop by a closed form, and
// yield_now keeps the hook import alive, as a real embedder's code would.
const clangSource = `
__attribute__((import_module("eryx"), import_name("preempt"))) void hook(void);

volatile unsigned sink;

void yield_now(void) { hook(); }

unsigned long long sum_squares(unsigned long long n) {
	unsigned long long s = 0;
	for (unsigned long long i = 0; i < n; i++) {
		s += i * i;
		sink = (unsigned)i;
	}
	return s;
}
`

// TestClangModule instruments what a real toolchain emits and interrupts a
// C loop with it.
func TestClangModule(t *testing.T) {
	clang, err := exec.LookPath("clang-16")
	if err != nil {
		t.Skip("clang-16 not on PATH")
	}
	dir := t.TempDir()
	src, wasmPath := filepath.Join(dir, "loop.c"), filepath.Join(dir, "loop.wasm")
	if err := os.WriteFile(src, []byte(clangSource), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(clang, "--target=wasm32-wasi", "-O2", "-nostdlib",
		"-Wl,--no-entry", "-Wl,--export-all", "-Wl,--allow-undefined", "-o", wasmPath, src)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%v: %v\n%s", cmd, err, out)
	}
	orig, err := os.ReadFile(wasmPath)
	if err != nil {
		t.Fatal(err)
	}
	out, st, err := InstrumentStats(orig, testOptions(false))
	if err != nil {
		t.Fatal(err)
	}
	if st.Loops == 0 {
		t.Fatalf("no loop instrumented in clang output: %+v", st)
	}
	t.Logf("%d -> %d bytes, %+v", len(orig), len(out), st)

	cfg := wazero.NewRuntimeConfig().WithCloseOnContextDone(true) // clean-up only, see TestSpinIsInterrupted
	h := &stopHook{refill: 1000}
	r := newTestRuntime(t, cfg, h.hook)
	mod := instantiate(t, r, out, "clang")
	got, err := mod.ExportedFunction("sum_squares").Call(context.Background(), 10)
	if err != nil || len(got) != 1 || got[0] != 285 {
		t.Fatalf("sum_squares(10) = %v, %v; want 285", got, err)
	}
	expectInterrupt(t, mod, h, "sum_squares", 1<<62)
}

// TestLargeModule instruments the module at ERYX_BENCH_WASM, if set, and
// checks wazero still validates it. A module without the hook import is
// instrumented with a check that traps instead of calling, which exercises
// the same decoding. The interpreter is used because it validates the same
// way and compiles much faster than the optimizing compiler.
func TestLargeModule(t *testing.T) {
	wasm, opts := benchInput(t)
	start := time.Now()
	out, st, err := InstrumentStats(wasm, opts)
	if errors.Is(err, ErrHookNotFound) || errors.Is(err, ErrHookType) {
		t.Logf("%v; checking with a trapping check instead", err)
		start = time.Now()
		out, st, err = instrumentTrapping(wasm, opts)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("instrumented %d -> %d bytes in %v: %+v", len(wasm), len(out), time.Since(start), st)
	ctx := context.Background()
	r := wazero.NewRuntimeWithConfig(ctx, wazero.NewRuntimeConfigInterpreter())
	defer func() { _ = r.Close(ctx) }()
	if _, err := r.CompileModule(ctx, out); err != nil {
		t.Fatal(err)
	}
}

// instrumentTrapping instruments with the countdown check but "unreachable"
// in place of the hook call, which needs no hook import.
func instrumentTrapping(wasm []byte, opts Options) ([]byte, Stats, error) {
	m, err := parseModule(wasm)
	if err != nil {
		return nil, Stats{}, err
	}
	info, err := m.imports("", "")
	if err != nil {
		return nil, Stats{}, err
	}
	hook := hookInfo{importedGlobals: info.globals}
	return m.rewriteWith(hook, opts, func(counter uint32) []byte {
		c := uleb(uint64(counter))
		return ins(opGlobalGet, c, i32c(1), opI32Sub, opGlobalSet, c,
			opGlobalGet, c, i32c(0), opI32LeS, opIf, tEmpty, opUnreachable, opEnd)
	})
}

// BenchmarkInstrument measures Instrument on the module at ERYX_BENCH_WASM.
// A module without the hook import is timed with the trapping check, which
// does the same work.
func BenchmarkInstrument(b *testing.B) {
	wasm, opts := benchInput(b)
	run := func() error { _, err := Instrument(wasm, opts); return err }
	if err := run(); errors.Is(err, ErrHookNotFound) || errors.Is(err, ErrHookType) {
		b.Logf("%v; timing with a trapping check", err)
		run = func() error { _, _, err := instrumentTrapping(wasm, opts); return err }
	}
	b.SetBytes(int64(len(wasm)))
	b.ReportAllocs()
	for b.Loop() {
		if err := run(); err != nil {
			b.Fatal(err)
		}
	}
}

// benchInput reads ERYX_BENCH_WASM and the hook named by ERYX_BENCH_HOOK
// ("module.name", default eryx.preempt), skipping when no module is given.
func benchInput(tb testing.TB) ([]byte, Options) {
	path := os.Getenv("ERYX_BENCH_WASM")
	if path == "" {
		tb.Skip("ERYX_BENCH_WASM not set")
	}
	wasm, err := os.ReadFile(path)
	if err != nil {
		tb.Fatal(err)
	}
	opts := testOptions(false)
	if hook := os.Getenv("ERYX_BENCH_HOOK"); hook != "" {
		mod, name, ok := strings.Cut(hook, ".")
		if !ok {
			tb.Fatalf("ERYX_BENCH_HOOK=%q, want module.name", hook)
		}
		opts.HookModule, opts.HookName = mod, name
	}
	return wasm, opts
}
