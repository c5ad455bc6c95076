package preempt

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/tetratelabs/wazero"
)

var wasmHeader = []byte{0x00, 'a', 's', 'm', 0x01, 0x00, 0x00, 0x00}

// withHook returns spinModule with its hook import replaced.
func withHook(im testImport, types ...testFuncType) []byte {
	m := spinModule()
	m.imports = []testImport{im}
	m.types = append(m.types, types...)
	return m.encode()
}

func TestInstrumentErrors(t *testing.T) {
	badOpcode := spinModule()
	badOpcode.funcs[1].code = ins(opNop, 0x06, opEnd) // last body: 0x06 is 2 bytes from the end
	badOpcodeWasm := badOpcode.encode()

	noImports := spinModule()
	noImports.imports = nil
	noImports.funcs = noImports.funcs[1:]
	noImports.exports = nil

	exported := spinModule()
	exported.exports = append(exported.exports, testExport{name: testCounter, kind: kindFunc, idx: 1})

	dupCode := spinModule().encode()
	dupCode = append(dupCode, encodeSection(secCode, vec(nil))...)

	// Three functions declared, but the code section of spinModule has two
	// bodies.
	threeFuncs := spinModule()
	threeFuncs.funcs = append(threeFuncs.funcs, testFunc{typ: 0, code: ins(opEnd)})
	countMismatch := append(append([]byte{}, wasmHeader...),
		sectionBytes(t, threeFuncs.encode(), secType, secImport, secFunction)...)
	countMismatch = append(countMismatch, sectionBytes(t, spinModule().encode(), secCode)...)

	withGlobal := func(g []byte) []byte {
		m := spinModule()
		m.globals = [][]byte{g}
		return m.encode()
	}

	cases := []struct {
		name     string
		wasm     []byte
		opts     Options
		want     error
		contains string
	}{
		{name: "empty", wasm: nil, want: ErrNotWasm},
		{name: "garbage", wasm: []byte("definitely not a wasm module"), want: ErrNotWasm},
		{name: "header only magic", wasm: wasmHeader[:4], want: ErrNotWasm},
		{name: "version 2", wasm: []byte{0x00, 'a', 's', 'm', 0x02, 0x00, 0x00, 0x00}, want: ErrUnsupportedVersion},
		{name: "component", wasm: []byte{0x00, 'a', 's', 'm', 0x0d, 0x00, 0x01, 0x00}, want: ErrUnsupportedVersion},
		{name: "no imports", wasm: noImports.encode(), want: ErrHookNotFound},
		{name: "other hook name", wasm: withHook(testImport{module: "eryx", name: "other", kind: kindFunc, desc: uleb(0)}), want: ErrHookNotFound},
		{name: "other hook module", wasm: withHook(testImport{module: "env", name: "preempt", kind: kindFunc, desc: uleb(0)}), want: ErrHookNotFound},
		{name: "hook takes i32", wasm: withHook(hookImport(2), funcType(oneI32, noTypes)), want: ErrHookType},
		{name: "hook returns i32", wasm: withHook(hookImport(2), funcType(noTypes, oneI32)), want: ErrHookType},
		{name: "hook is a global", wasm: withHook(testImport{module: "eryx", name: "preempt", kind: kindGlobal, desc: []byte{tI32, 0}}), want: ErrHookType},
		{name: "hook type out of range", wasm: withHook(hookImport(9)), want: ErrMalformed},
		{name: "unknown opcode", wasm: badOpcodeWasm, want: ErrUnknownOpcode,
			contains: fmt.Sprintf("0x06 at offset %d", len(badOpcodeWasm)-2)},
		{name: "countdown name already exported", wasm: exported.encode(), want: ErrExportExists},
		{name: "unknown section id", wasm: append(append([]byte{}, wasmHeader...), 14, 0), want: ErrMalformed},
		{name: "section overruns", wasm: append(append([]byte{}, wasmHeader...), secType, 5, 0), want: ErrMalformed},
		{name: "sections out of order", wasm: append(append([]byte{}, wasmHeader...), secExport, 1, 0, secType, 1, 0), want: ErrMalformed},
		{name: "duplicate section", wasm: dupCode, want: ErrMalformed},
		{name: "function and code counts differ", wasm: countMismatch, want: ErrMalformed},
		{name: "count LEB overflows", wasm: append(append([]byte{}, wasmHeader...), secImport, 5, 0x80, 0x80, 0x80, 0x80, 0x70), want: ErrMalformed},
		{name: "custom section name overruns", wasm: append(append([]byte{}, wasmHeader...), secCustom, 2, 5, 'a'), want: ErrMalformed},
		{name: "global section trailing bytes", wasm: withGlobal(ins(tI32, 0, i32c(1), opEnd, opNop)), want: ErrMalformed},
		{name: "global init without end", wasm: withGlobal(ins(tI32, 0, i32c(1))), want: ErrMalformed},
		{name: "global init unknown opcode", wasm: withGlobal(ins(tI32, 0, 0xff, opEnd)), want: ErrUnknownOpcode},
		{name: "missing countdown export name", wasm: spinModule().encode(), opts: Options{HookModule: "eryx", HookName: "preempt"}, want: ErrOptions},
		{name: "missing hook name", wasm: spinModule().encode(), opts: Options{HookModule: "eryx", FlagExport: "f"}, want: ErrOptions},
		{name: "countdown export name not UTF-8", wasm: spinModule().encode(), opts: Options{HookModule: "eryx", HookName: "preempt", FlagExport: "\xff"}, want: ErrOptions},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			opts := c.opts
			if opts == (Options{}) {
				opts = testOptions(false)
			}
			out, err := Instrument(c.wasm, opts)
			if !errors.Is(err, c.want) {
				t.Fatalf("got %v, want %v", err, c.want)
			}
			if out != nil {
				t.Errorf("output returned with error %v", err)
			}
			if !strings.Contains(err.Error(), c.contains) {
				t.Errorf("error %q does not mention %q", err, c.contains)
			}
		})
	}
}

// sectionBytes returns the encoded sections (header and payload) of wasm
// with the given ids, in file order.
func sectionBytes(t *testing.T, wasm []byte, ids ...int) []byte {
	t.Helper()
	m, err := parseModule(wasm)
	if err != nil {
		t.Fatal(err)
	}
	var out []byte
	for _, s := range m.sections {
		for _, id := range ids {
			if int(s.id) == id {
				out = append(out, encodeSection(s.id, wasm[s.start:s.end])...)
			}
		}
	}
	return out
}

func TestInstrumentTwiceFails(t *testing.T) {
	once, err := Instrument(nestedModule().encode(), testOptions(false))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Instrument(once, testOptions(false)); !errors.Is(err, ErrExportExists) {
		t.Fatalf("second instrumentation: got %v, want %v", err, ErrExportExists)
	}
}

// TestTruncatedInput cuts a module with many sections at every length. No
// cut may panic; a cut inside the code section must be reported as
// malformed; a cut that happens to leave a valid module must still produce
// output wazero accepts.
func TestTruncatedInput(t *testing.T) {
	ctx := context.Background()
	full := bulkModule().encode()
	m, err := parseModule(full)
	if err != nil {
		t.Fatal(err)
	}
	code := m.sections[m.index[secCode]]
	r := wazero.NewRuntime(ctx)
	defer func() { _ = r.Close(ctx) }()
	validCuts := 0
	for n := range len(full) {
		out, err := Instrument(full[:n], testOptions(true))
		if n > code.start && n < code.end && !errors.Is(err, ErrMalformed) {
			t.Errorf("cut at %d inside the code section: got %v, want %v", n, err, ErrMalformed)
		}
		if err != nil {
			continue
		}
		// Instrument checks structure, not validity, so an invalid cut
		// (say, a data count without data) may pass through unchanged in
		// that respect; only valid inputs must give valid outputs.
		if _, err := r.CompileModule(ctx, full[:n]); err != nil {
			continue
		}
		validCuts++
		if _, err := r.CompileModule(ctx, out); err != nil {
			t.Errorf("cut at %d: instrumented output does not compile: %v", n, err)
		}
	}
	if validCuts == 0 {
		t.Error("no cut produced a valid module; the check above never ran")
	}
}

// FuzzInstrument checks Instrument never panics and that what it accepts
// comes out well-formed and already instrumented.
func FuzzInstrument(f *testing.F) {
	for _, c := range instrumentCases() {
		f.Add(c.mod.encode())
	}
	f.Fuzz(func(t *testing.T, wasm []byte) {
		out, err := Instrument(wasm, testOptions(true))
		if err != nil {
			return
		}
		if _, err := parseModule(out); err != nil {
			t.Fatalf("output does not parse: %v", err)
		}
		if _, err := Instrument(out, testOptions(true)); !errors.Is(err, ErrExportExists) {
			t.Fatalf("instrumenting the output again: got %v, want %v", err, ErrExportExists)
		}
	})
}
