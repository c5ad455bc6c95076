package preempt

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"math"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/sys"
)

// testCounter is the export name of the countdown global in the tests.
const testCounter = "eryx_preempt"

func testOptions(functionEntry bool) Options {
	return Options{HookModule: "eryx", HookName: "preempt", FlagExport: testCounter, FunctionEntry: functionEntry}
}

// countdown returns the exported countdown global of an instrumented module.
func countdown(t testing.TB, mod api.Module) api.MutableGlobal {
	t.Helper()
	g, ok := mod.ExportedGlobal(testCounter).(api.MutableGlobal)
	if !ok {
		t.Fatalf("countdown export %q missing or immutable", testCounter)
	}
	return g
}

type testCall struct {
	fn   string
	args []uint64
	want []uint64
}

type instrumentCase struct {
	name    string
	mod     testModule
	env     *testModule // instantiated as module "env" before mod, when set
	calls   []testCall
	loops   int
	counter uint32 // expected countdown global index
	hook    uint32 // expected hook function index
}

func u64s(v ...uint64) []uint64 { return v }

// spinModule: spin() loops forever; add(a, b) is a plain function.
func spinModule() testModule {
	return testModule{
		types:   []testFuncType{funcType(noTypes, noTypes), funcType([]byte{tI32, tI32}, oneI32)},
		imports: []testImport{hookImport(0)},
		funcs: []testFunc{
			{typ: 0, code: ins(opLoop, tEmpty, opBr, 0, opEnd, opEnd)},
			{typ: 1, code: ins(get(0), get(1), opI32Add, opEnd)},
		},
		exports: []testExport{exportFunc("spin", 1), exportFunc("add", 2)},
	}
}

// nestedModule: f(n, m) = sum of i*j for i < n, j < m, with two nested loops.
func nestedModule() testModule {
	const n, m, i, j, acc = 0, 1, 2, 3, 4
	code := ins(
		opBlock, tEmpty, opLoop, tEmpty,
		get(i), get(n), opI32GeU, opBrIf, 1,
		i32c(0), set(j),
		opBlock, tEmpty, opLoop, tEmpty,
		get(j), get(m), opI32GeU, opBrIf, 1,
		get(acc), get(i), get(j), opI32Mul, opI64ExtendU, opI64Add, set(acc),
		get(j), i32c(1), opI32Add, set(j),
		opBr, 0,
		opEnd, opEnd,
		get(i), i32c(1), opI32Add, set(i),
		opBr, 0,
		opEnd, opEnd,
		get(acc), opEnd,
	)
	return testModule{
		types:   []testFuncType{funcType(noTypes, noTypes), funcType([]byte{tI32, tI32}, oneI64)},
		imports: []testImport{hookImport(0)},
		funcs:   []testFunc{{typ: 1, locals: [][2]uint32{{2, tI32}, {1, tI64}}, code: code}},
		exports: []testExport{exportFunc("f", 1)},
	}
}

// blockTypesModule uses a loop with a parameter through a type index above
// 63 (a two-byte s33), value-type block types and a multi-value block.
func blockTypesModule() testModule {
	types := []testFuncType{funcType(noTypes, noTypes)}
	for len(types) < 70 {
		types = append(types, funcType(oneI32, noTypes))
	}
	const loopType, pairType, i64Type = 70, 71, 72
	types = append(types,
		funcType(oneI32, oneI32),              // 70: [i32] -> [i32]
		funcType(noTypes, []byte{tI32, tI64}), // 71: [] -> [i32 i64]
		funcType(noTypes, oneI64),             // 72: [] -> [i64]
		funcType([]byte{tI32, tI64}, noTypes)) // 73: filler
	countdown := ins(
		get(0),
		opLoop, blockIdx(loopType),
		i32c(1), opI32Sub, opLocalTee, 1, get(1), i32c(0), opI32GtS, opBrIf, 0,
		opEnd,
		i32c(100), opI32Add, opEnd,
	)
	pair := ins(opBlock, blockIdx(pairType), i32c(1), i64c(2), opEnd, opEnd)
	typed := ins(
		opBlock, tI32, i32c(7), opEnd, opI64ExtendS,
		opLoop, tI64, i64c(9), opEnd, opI64Add,
		i32c(0), opIf, tI64, i64c(100), opElse, i64c(1000), opEnd, opI64Add,
		opEnd,
	)
	return testModule{
		types:   types,
		imports: []testImport{hookImport(0)},
		funcs: []testFunc{
			{typ: loopType, locals: [][2]uint32{{1, tI32}}, code: countdown},
			{typ: pairType, code: pair},
			{typ: i64Type, code: typed},
		},
		exports: []testExport{exportFunc("countdown", 1), exportFunc("pair", 2), exportFunc("typed", 3)},
	}
}

// Constants whose encodings contain the bytes of loop (0x03), end (0x0b) and
// br (0x0c): a decoder that lost track of immediates would insert checks
// inside them.
const (
	mixF64Bits = 0x0b030b030b030c03
	mixF32Bits = 0x030b0c03
	mixI64     = 0x0303030303
)

func constsModule() testModule {
	const i, acc = 0, 1
	code := ins(
		i64c(math.MinInt64), i64c(mixI64), opI64Xor, set(acc),
		opLoop, tEmpty,
		get(acc), f64c(mixF64Bits), opI64ReinterpF, opI64Add,
		f32c(mixF32Bits), opI32ReinterpF, opI64ExtendU, opI64Add,
		i32c(-1), opI64ExtendS, opI64Add, set(acc),
		get(i), i32c(1), opI32Add, set(i),
		i32c(3), get(i), opI32GtS, opBrIf, 0,
		opEnd,
		get(acc), opEnd,
	)
	return testModule{
		types:   []testFuncType{funcType(noTypes, noTypes), funcType(noTypes, oneI64)},
		imports: []testImport{hookImport(0)},
		funcs:   []testFunc{{typ: 1, locals: [][2]uint32{{1, tI32}, {1, tI64}}, code: code}},
		exports: []testExport{exportFunc("mix", 1)},
	}
}

func constsWant() uint64 {
	acc := uint64(1)<<63 ^ mixI64 // bits of math.MinInt64
	for range 3 {
		acc += mixF64Bits + mixF32Bits - 1
	}
	return acc
}

// brTableModule: classify(n) adds 1, 10 or 100 for each i in n..1 by i%3;
// wide(x) has a br_table with 130 labels (a two-byte vector length).
func brTableModule() testModule {
	const n, acc = 0, 1
	classify := ins(
		opBlock, tEmpty, opLoop, tEmpty,
		get(n), opI32Eqz, opBrIf, 1,
		opBlock, tEmpty, // next
		opBlock, tEmpty, // b2
		opBlock, tEmpty, // b1
		opBlock, tEmpty, // b0
		get(n), i32c(3), opI32RemU,
		opBrTable, 3, 0, 1, 2, 2,
		opEnd,
		get(acc), i32c(1), opI32Add, set(acc), opBr, 2,
		opEnd,
		get(acc), i32c(10), opI32Add, set(acc), opBr, 1,
		opEnd,
		get(acc), i32c(100), opI32Add, set(acc),
		opEnd,
		get(n), i32c(1), opI32Sub, set(n),
		opBr, 0,
		opEnd, opEnd,
		get(acc), opEnd,
	)
	wide := ins(opBlock, tEmpty, opBlock, tEmpty, get(0), opBrTable, uleb(130), bytes.Repeat([]byte{0}, 130), 1,
		opEnd, i32c(5), opReturn, opEnd, i32c(6), opEnd)
	return testModule{
		types:   []testFuncType{funcType(noTypes, noTypes), funcType(oneI32, oneI32)},
		imports: []testImport{hookImport(0)},
		funcs: []testFunc{
			{typ: 1, locals: [][2]uint32{{1, tI32}}, code: classify},
			{typ: 1, code: wide},
		},
		exports: []testExport{exportFunc("classify", 1), exportFunc("wide", 2)},
	}
}

// memoryModule: sum(n) stores 3*i at 4+4*i for i < n, sums it back, then
// adds a byte round trip at offset 1000, memory.grow's result and memory.size.
func memoryModule() testModule {
	const n, i, acc = 0, 1, 2
	code := ins(
		opBlock, tEmpty, opLoop, tEmpty,
		get(i), get(n), opI32GeU, opBrIf, 1,
		get(i), i32c(4), opI32Mul, get(i), i32c(3), opI32Mul, opI32Store, memarg(2, 4),
		get(i), i32c(1), opI32Add, set(i), opBr, 0,
		opEnd, opEnd,
		i32c(0), set(i),
		opBlock, tEmpty, opLoop, tEmpty,
		get(i), get(n), opI32GeU, opBrIf, 1,
		get(acc), get(i), i32c(4), opI32Mul, opI32Load, memarg(2, 4), opI32Add, set(acc),
		get(i), i32c(1), opI32Add, set(i), opBr, 0,
		opEnd, opEnd,
		i32c(0), i32c(0x1ff), opI32Store8, memarg(0, 1000),
		get(acc), i32c(0), opI32Load8U, memarg(0, 1000), opI32Add,
		i32c(1), opMemoryGrow, 0, opI32Add,
		opMemorySize, 0, opI32Add,
		opEnd,
	)
	return testModule{
		types:   []testFuncType{funcType(noTypes, noTypes), funcType(oneI32, oneI32)},
		imports: []testImport{hookImport(0)},
		funcs:   []testFunc{{typ: 1, locals: [][2]uint32{{2, tI32}}, code: code}},
		memory:  []byte{0x00, 0x01},
		exports: []testExport{exportFunc("sum", 1)},
	}
}

// bulkModule exercises every 0xFC instruction family: memory.init/data.drop,
// memory.copy/fill, a saturating truncation and the table instructions.
func bulkModule() testModule {
	const i, acc = 0, 1
	addI32 := func(scale int32) []byte { return ins(i32c(scale), opI32Mul, opI64ExtendU, opI64Add) }
	code := ins(
		i32c(0), i32c(0), i32c(4), fc(8, 0, 0), // memory.init data 0
		fc(9, 0),                                 // data.drop 0
		i32c(16), i32c(0), i32c(4), fc(10, 0, 0), // memory.copy
		i32c(32), i32c(0xaa), i32c(4), fc(11, 0), // memory.fill
		opBlock, tEmpty, opLoop, tEmpty,
		get(i), i32c(4), opI32GeU, opBrIf, 1,
		get(acc), get(i), opI32Load8U, memarg(0, 16), get(i), opI32Load8U, memarg(0, 32), opI32Add,
		opI64ExtendU, opI64Add, set(acc),
		get(i), i32c(1), opI32Add, set(i), opBr, 0,
		opEnd, opEnd,
		get(acc),
		f64v(1e300), fc(2), opI64ExtendS, opI64Add, // i32.trunc_sat_f64_s
		i32c(0), i32c(0), i32c(1), fc(12, 0, 0), // table.init elem 0 into table 0
		fc(13, 0),                               // elem.drop 0
		i32c(1), i32c(0), i32c(1), fc(14, 0, 0), // table.copy slot 0 to 1
		opRefFunc, 1, i32c(1), fc(15, 0), addI32(1000), // table.grow: old size 2
		fc(16, 0), addI32(10000), // table.size: 3
		i32c(2), opRefNull, tFuncRef, i32c(1), fc(17, 0), // table.fill slot 2 with null
		i32c(1), opTableGet, 0, opRefIsNull, addI32(100000),
		i32c(2), opTableGet, 0, opRefIsNull, addI32(1000000),
		opEnd,
	)
	return testModule{
		types:     []testFuncType{funcType(noTypes, noTypes), funcType(oneI32, oneI32), funcType(noTypes, oneI64)},
		imports:   []testImport{hookImport(0)},
		funcs:     []testFunc{{typ: 1, code: ins(get(0), opEnd)}, {typ: 2, locals: [][2]uint32{{1, tI32}, {1, tI64}}, code: code}},
		tables:    [][]byte{{tFuncRef, 0x00, 0x02}},
		memory:    []byte{0x00, 0x01},
		exports:   []testExport{exportFunc("bulk", 2)},
		elems:     [][]byte{ins(0x01, 0x00, vec([][]byte{uleb(1)}))},      // passive, funcref: [func 1]
		data:      [][]byte{ins(0x01, vec([][]byte{{1}, {2}, {3}, {4}}))}, // passive "\x01\x02\x03\x04"
		dataCount: true,
	}
}

func v128i32(a, b, c, d uint32) []byte {
	var out []byte
	for _, v := range []uint32{a, b, c, d} {
		out = binary.LittleEndian.AppendUint32(out, v)
	}
	return out
}

// simdModule adds (10,20,30,40) to (1,2,3,4) three times in memory, then
// reads lane 0 through a dword-reversing shuffle and lane 1 through
// v128.load32_lane.
func simdModule() testModule {
	const k = 0
	reverse := []byte{12, 13, 14, 15, 8, 9, 10, 11, 4, 5, 6, 7, 0, 1, 2, 3}
	code := ins(
		i32c(0), fd(0x0c, v128i32(1, 2, 3, 4)...), fd(0x0b, memarg(4, 0)...),
		opLoop, tEmpty,
		i32c(0), i32c(0), fd(0x00, memarg(4, 0)...), fd(0x0c, v128i32(10, 20, 30, 40)...),
		fd(0xae),                  // i32x4.add, a two-byte sub-opcode
		fd(0x0b, memarg(4, 0)...), // v128.store
		get(k), i32c(1), opI32Add, set(k),
		i32c(3), get(k), opI32GtS, opBrIf, 0,
		opEnd,
		i32c(0), fd(0x00, memarg(4, 0)...), fd(0x0c, v128i32(0, 0, 0, 0)...), fd(0x0d, reverse...),
		fd(0x1b, 3),                                                                     // i32x4.extract_lane 3
		i32c(0), fd(0x0c, v128i32(0, 0, 0, 0)...), fd(0x56, append(memarg(2, 4), 2)...), // v128.load32_lane offset=4 lane 2
		fd(0x1b, 2),
		opI32Add,
		opEnd,
	)
	return testModule{
		types:   []testFuncType{funcType(noTypes, noTypes), funcType(noTypes, oneI32)},
		imports: []testImport{hookImport(0)},
		funcs:   []testFunc{{typ: 1, locals: [][2]uint32{{1, tI32}}, code: code}},
		memory:  []byte{0x00, 0x01},
		exports: []testExport{exportFunc("simd", 1)},
	}
}

// miscModule: call_indirect in a loop, sign extension, typed select, many
// local groups including v128, and recursion.
func miscModule() testModule {
	const n, i, acc = 0, 1, 2
	run := ins(
		i32c(1), set(acc),
		opBlock, tEmpty, opLoop, tEmpty,
		get(i), get(n), opI32GeU, opBrIf, 1,
		get(acc), get(i), i32c(1), opI32And, opCallIndirect, 1, 0, set(acc),
		get(i), i32c(1), opI32Add, set(i), opBr, 0,
		opEnd, opEnd,
		get(acc), i32c(0xff), opI32Extend8S, opI32Add,
		i32c(1), i32c(2), i32c(0), opSelectT, 1, tI32, opI32Add,
		opEnd,
	)
	fact := ins(
		i32c(2), get(0), opI32GtS,
		opIf, tI32, i32c(1),
		opElse, get(0), get(0), i32c(1), opI32Sub, opCall, 4, opI32Mul,
		opEnd, opEnd,
	)
	return testModule{
		types:   []testFuncType{funcType(noTypes, noTypes), funcType(oneI32, oneI32)},
		imports: []testImport{hookImport(0)},
		funcs: []testFunc{
			{typ: 1, code: ins(get(0), get(0), opI32Add, opEnd)},  // double
			{typ: 1, code: ins(get(0), i32c(1), opI32Add, opEnd)}, // inc
			{typ: 1, locals: [][2]uint32{{2, tI32}, {2, tI64}, {1, tF64}, {1, tV128}}, code: run},
			{typ: 1, code: fact},
		},
		tables:  [][]byte{{tFuncRef, 0x00, 0x02}},
		elems:   [][]byte{ins(0x00, i32c(0), opEnd, vec([][]byte{uleb(1), uleb(2)}))},
		exports: []testExport{exportFunc("run", 3), exportFunc("fact", 4)},
	}
}

// importsModule imports a global and a function before the hook, and
// defines two globals, so the countdown is global 3 and the hook function 1.
func importsModule() (mod, env testModule) {
	env = testModule{
		types:   []testFuncType{funcType(oneI32, oneI32)},
		funcs:   []testFunc{{typ: 0, code: ins(get(0), get(0), opI32Add, opEnd)}},
		globals: [][]byte{ins(tI32, 0x00, i32c(7), opEnd)},
		exports: []testExport{exportFunc("twice", 0), {name: "g", kind: kindGlobal, idx: 0}},
	}
	const n, acc = 0, 1
	code := ins(
		opGlobalGet, 0, set(acc),
		opBlock, tEmpty, opLoop, tEmpty,
		get(n), opI32Eqz, opBrIf, 1,
		get(acc), opCall, 0, set(acc),
		get(n), i32c(1), opI32Sub, set(n), opBr, 0,
		opEnd, opEnd,
		get(acc), opGlobalGet, 2, opI32Add,
		opEnd,
	)
	mod = testModule{
		types: []testFuncType{funcType(noTypes, noTypes), funcType(oneI32, oneI32)},
		imports: []testImport{
			{module: "env", name: "g", kind: kindGlobal, desc: []byte{tI32, 0x00}},
			{module: "env", name: "twice", kind: kindFunc, desc: uleb(1)},
			hookImport(0),
		},
		globals: [][]byte{ins(tI32, 0x01, i32c(0), opEnd), ins(tI32, 0x01, i32c(1000), opEnd)},
		funcs:   []testFunc{{typ: 1, locals: [][2]uint32{{1, tI32}}, code: code}},
		exports: []testExport{exportFunc("f", 2)},
	}
	return mod, env
}

// bareModule has neither global nor export section, and custom sections of
// each kind the instrumenter treats differently.
func bareModule() testModule {
	nameSec := ins(0x00, uleb(uint64(len(name("bare")))), name("bare")) // module name subsection
	return testModule{
		types:   []testFuncType{funcType(noTypes, noTypes)},
		imports: []testImport{hookImport(0)},
		funcs:   []testFunc{{typ: 0, code: ins(opBlock, tEmpty, opLoop, tEmpty, i32c(0), opBrIf, 0, opEnd, opEnd, opEnd)}},
		customs: []testCustom{
			{name: ".debug_info", data: []byte{1, 2, 3}},
			{name: "name", data: nameSec},
			{name: ".debug_line", data: []byte{4}},
			{name: "producers", data: []byte{0}},
		},
	}
}

func instrumentCases() []instrumentCase {
	imports, env := importsModule()
	return []instrumentCase{
		{name: "spin", mod: spinModule(), loops: 1,
			calls: []testCall{{"add", u64s(2, 3), u64s(5)}}},
		{name: "nested loops", mod: nestedModule(), loops: 2,
			calls: []testCall{{"f", u64s(10, 7), u64s(945)}}},
		{name: "block types", mod: blockTypesModule(), loops: 2,
			calls: []testCall{
				{"countdown", u64s(5), u64s(100)},
				{"pair", nil, u64s(1, 2)},
				{"typed", nil, u64s(1016)},
			}},
		{name: "constants", mod: constsModule(), loops: 1,
			calls: []testCall{{"mix", nil, u64s(constsWant())}}},
		{name: "br_table", mod: brTableModule(), loops: 1,
			calls: []testCall{
				{"classify", u64s(7), u64s(232)},
				{"wide", u64s(3), u64s(5)},
				{"wide", u64s(200), u64s(6)},
			}},
		{name: "memory", mod: memoryModule(), loops: 2,
			calls: []testCall{{"sum", u64s(10), u64s(393)}}},
		{name: "bulk and table", mod: bulkModule(), loops: 1,
			calls: []testCall{{"bulk", nil, u64s(690 + math.MaxInt32 + 2000 + 30000 + 1000000)}}},
		{name: "simd", mod: simdModule(), loops: 1,
			calls: []testCall{{"simd", nil, u64s(31 + 62)}}},
		{name: "misc", mod: miscModule(), loops: 1,
			calls: []testCall{{"run", u64s(5), u64s(15)}, {"fact", u64s(5), u64s(120)}}},
		{name: "imports of every kind", mod: imports, env: &env, loops: 1, counter: 3, hook: 1,
			calls: []testCall{{"f", u64s(3), u64s(7*8 + 1000)}}},
		{name: "no global or export section", mod: bareModule(), loops: 1},
	}
}

// newTestRuntime returns a runtime with the hook module "eryx" whose
// preempt function runs hook.
func newTestRuntime(t *testing.T, cfg wazero.RuntimeConfig, hook func(context.Context, api.Module)) wazero.Runtime {
	t.Helper()
	ctx := context.Background()
	if cfg == nil {
		cfg = wazero.NewRuntimeConfig()
	}
	r := wazero.NewRuntimeWithConfig(ctx, cfg)
	t.Cleanup(func() { _ = r.Close(ctx) })
	_, err := r.NewHostModuleBuilder("eryx").NewFunctionBuilder().WithFunc(hook).Export("preempt").Instantiate(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func instantiate(t *testing.T, r wazero.Runtime, wasm []byte, name string) api.Module {
	t.Helper()
	ctx := context.Background()
	compiled, err := r.CompileModule(ctx, wasm)
	if err != nil {
		t.Fatalf("compile %s: %v", name, err)
	}
	mod, err := r.InstantiateModule(ctx, compiled, wazero.NewModuleConfig().WithName(name))
	if err != nil {
		t.Fatalf("instantiate %s: %v", name, err)
	}
	return mod
}

func TestInstrumentKeepsBehaviour(t *testing.T) {
	for _, c := range instrumentCases() {
		for _, entry := range []bool{false, true} {
			name := c.name
			if entry {
				name += "/function entry"
			}
			t.Run(name, func(t *testing.T) { checkCase(t, c, entry) })
		}
	}
}

func checkCase(t *testing.T, c instrumentCase, functionEntry bool) {
	ctx := context.Background()
	orig := c.mod.encode()
	out, st, err := InstrumentStats(orig, testOptions(functionEntry))
	if err != nil {
		t.Fatal(err)
	}
	wantChecks := c.loops
	if functionEntry {
		wantChecks += len(c.mod.funcs)
	}
	wantStats := Stats{Functions: len(c.mod.funcs), Loops: c.loops, Checks: wantChecks, FlagIndex: c.counter, HookIndex: c.hook}
	if st != wantStats {
		t.Errorf("stats = %+v, want %+v", st, wantStats)
	}
	if len(out) != cap(out) {
		t.Errorf("output is %d bytes in a %d-byte buffer: size precomputed wrongly", len(out), cap(out))
	}

	var hookCalls atomic.Int64
	r := newTestRuntime(t, nil, func(context.Context, api.Module) { hookCalls.Add(1) })
	if c.env != nil {
		instantiate(t, r, c.env.encode(), "env")
	}
	origMod := instantiate(t, r, orig, "orig")
	instMod := instantiate(t, r, out, "instrumented")
	counter := countdown(t, instMod)
	if counter.Type() != api.ValueTypeI32 || counter.Get() != 0 {
		t.Errorf("countdown type %v value %d, want i32 0", counter.Type(), counter.Get())
	}
	// Every call here runs far fewer checks than the budget, so the
	// countdown never runs out and the hook is never called.
	const budget = 1 << 30
	counter.Set(budget)
	for _, call := range c.calls {
		got, err := instMod.ExportedFunction(call.fn).Call(ctx, call.args...)
		if err != nil {
			t.Fatalf("%s%v: %v", call.fn, call.args, err)
		}
		base, err := origMod.ExportedFunction(call.fn).Call(ctx, call.args...)
		if err != nil {
			t.Fatalf("original %s%v: %v", call.fn, call.args, err)
		}
		if !equalU64s(got, call.want) || !equalU64s(base, call.want) {
			t.Errorf("%s%v = %v (original %v), want %v", call.fn, call.args, got, base, call.want)
		}
	}
	if n := hookCalls.Load(); n != 0 {
		t.Errorf("hook called %d times with a countdown of %d", n, budget)
	}
	v := int64(api.DecodeI32(counter.Get()))
	maxV := int64(budget)
	if functionEntry {
		maxV -= int64(len(c.calls)) // at least the entry check ran per call
	}
	if v <= 0 || v > maxV {
		t.Errorf("countdown %d after the calls, want in (0, %d]", v, maxV)
	}
}

func equalU64s(a, b []uint64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestExactOutput pins the encoding of the inserted check and the new
// global and export.
func TestExactOutput(t *testing.T) {
	out, err := Instrument(spinModule().encode(), testOptions(false))
	if err != nil {
		t.Fatal(err)
	}
	want := spinModule()
	want.funcs[0].code = ins(opLoop, tEmpty,
		wantCheck(0, 0),
		opBr, 0, opEnd, opEnd)
	want.globals = [][]byte{{tI32, 0x01, opI32Const, 0x00, opEnd}} // mutable i32, starts at 0
	want.exports = append(want.exports, testExport{name: testCounter, kind: kindGlobal, idx: 0})
	if w := want.encode(); !bytes.Equal(out, w) {
		t.Errorf("output\n% x\nwant\n% x", out, w)
	}
}

// wantCheck is the inserted check for countdown global c and hook function
// h, written out from the instruction set independently of checkSequence.
func wantCheck(c, h uint32) []byte {
	return ins(
		opGlobalGet, uleb(uint64(c)), i32c(1), opI32Sub, opGlobalSet, uleb(uint64(c)),
		opGlobalGet, uleb(uint64(c)), i32c(0), opI32LeS,
		opIf, tEmpty, opCall, uleb(uint64(h)), opEnd,
	)
}

// TestCheckSequence pins the check for indices that need multi-byte LEB128s.
func TestCheckSequence(t *testing.T) {
	for _, idx := range [][2]uint32{{0, 0}, {127, 128}, {200, 70000}, {math.MaxUint32, 1 << 21}} {
		got, want := checkSequence(idx[0], idx[1]), wantCheck(idx[0], idx[1])
		if !bytes.Equal(got, want) {
			t.Errorf("checkSequence(%d, %d) =\n% x\nwant\n% x", idx[0], idx[1], got, want)
		}
	}
}

// expectCountdown is how often the hook runs, and the countdown's value
// afterwards, when k checks execute starting from countdown c0 and the hook
// sets the countdown to refill. A refill of 0 stands for a hook that leaves
// the countdown alone.
//
// Each check decrements first, so the first call comes at check c0 (at
// check 1 if c0 <= 0, the comparison being signed); after a refill to n the
// next one comes n checks later.
func expectCountdown(c0, refill, k int64) (calls, final int64) {
	first := max(c0, 1)
	switch {
	case k < first:
		return 0, c0 - k
	case refill == 0:
		return k - first + 1, c0 - k
	default:
		return 1 + (k-first)/refill, refill - (k-first)%refill
	}
}

// TestHookCallsFollowCountdown checks that the countdown really is the
// global the checks decrement and compare, with the exact number of hook
// calls for known numbers of executed checks.
func TestHookCallsFollowCountdown(t *testing.T) {
	imports, env := importsModule()
	cases := []struct {
		name   string
		mod    testModule
		env    *testModule
		call   testCall
		checks int64 // loop checks executed by the call; function entry adds one
	}{
		// Outer loop head n+1 times, inner m+1 times per outer iteration.
		{"nested loops", nestedModule(), nil, testCall{"f", u64s(10, 7), u64s(945)}, 11 + 10*8},
		// env.twice is not instrumented; the loop head runs n+1 times.
		{"imports of every kind", imports, &env, testCall{"f", u64s(3), u64s(1056)}, 4},
		{"br_table", brTableModule(), nil, testCall{"classify", u64s(7), u64s(232)}, 8},
		// The loop head runs once per iteration, n times.
		{"long loop", blockTypesModule(), nil, testCall{"countdown", u64s(1000), u64s(100)}, 1000},
	}
	for _, c := range cases {
		for _, entry := range []bool{false, true} {
			name := c.name
			if entry {
				name += "/function entry"
			}
			t.Run(name, func(t *testing.T) {
				k := c.checks
				if entry {
					k++
				}
				out, err := Instrument(c.mod.encode(), testOptions(entry))
				if err != nil {
					t.Fatal(err)
				}
				// The hook runs on the goroutine that calls the guest.
				var hookCalls, refill int64
				r := newTestRuntime(t, nil, func(_ context.Context, m api.Module) {
					hookCalls++
					if refill != 0 {
						countdown(t, m).Set(api.EncodeI32(int32(refill)))
					}
				})
				if c.env != nil {
					instantiate(t, r, c.env.encode(), "env")
				}
				mod := instantiate(t, r, out, "instrumented")
				counter := countdown(t, mod)
				rounds := [][2]int64{ // start value (-1: as left by the last round), refill
					{0, 5}, // the initial value: the first check calls the hook
					{-1, 3},
					{1 << 30, 1}, // budget larger than the loop: no call
					{k + 1, 1},   // one short of running out
					{k, 1 << 20}, // runs out at the last check
					{1, 1},       // every check calls
					{1, k},
					{2, k - 1},
					{k - 1, 2},
					{7, 3},
					{3, 7},
					{-5, 4}, // already negative: the comparison is signed
					{0, 0},  // a hook that does not refill is called at every check
					{-1, 64},
				}
				for i, round := range rounds {
					c0 := int64(api.DecodeI32(counter.Get()))
					if i == 0 && c0 != 0 {
						t.Fatalf("countdown starts at %d, want 0", c0)
					}
					if round[0] != -1 {
						c0 = round[0]
						counter.Set(api.EncodeI32(int32(c0)))
					}
					hookCalls, refill = 0, round[1]
					got, err := mod.ExportedFunction(c.call.fn).Call(context.Background(), c.call.args...)
					if err != nil || !equalU64s(got, c.call.want) {
						t.Fatalf("%s = %v, %v; want %v", c.call.fn, got, err, c.call.want)
					}
					wantCalls, wantFinal := expectCountdown(c0, refill, k)
					final := int64(api.DecodeI32(counter.Get()))
					if hookCalls != wantCalls || final != wantFinal {
						t.Errorf("%d checks from %d with refill %d: %d hook calls, countdown %d; want %d, %d",
							k, c0, refill, hookCalls, final, wantCalls, wantFinal)
					}
				}
			})
		}
	}
}

// stopHook is the hook a host installs: it refills the countdown, so that
// the guest comes back to Go every refill checks, until Stop is called;
// then it ends the call with exit code 137.
type stopHook struct {
	refill int32
	stop   atomic.Bool
	calls  atomic.Int64
	// mu orders the hook's refill and Stop's zeroing of the countdown,
	// which are both Go writes to the same global (the race detector
	// reports them otherwise). It also means a refill cannot land just
	// after the zero and postpone the stop by refill checks: the hook
	// either sees stop or refills before the countdown is zeroed.
	mu sync.Mutex
}

func (h *stopHook) hook(_ context.Context, m api.Module) {
	h.calls.Add(1)
	h.mu.Lock()
	stopped := h.stop.Load()
	if !stopped {
		m.ExportedGlobal(testCounter).(api.MutableGlobal).Set(api.EncodeI32(h.refill))
	}
	h.mu.Unlock()
	if stopped {
		panic(sys.NewExitError(137))
	}
}

// Stop makes the guest running in mod call the hook at its next check, and
// the hook end the call.
func (h *stopHook) Stop(mod api.Module) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.stop.Store(true)
	mod.ExportedGlobal(testCounter).(api.MutableGlobal).Set(0)
}

// TestSpinIsInterrupted runs an endless loop and stops it through the
// countdown.
func TestSpinIsInterrupted(t *testing.T) {
	for _, entry := range []bool{false, true} {
		t.Run(map[bool]string{false: "loops", true: "function entry"}[entry], func(t *testing.T) {
			out, err := Instrument(spinModule().encode(), testOptions(entry))
			if err != nil {
				t.Fatal(err)
			}
			// Closing on context done is only the clean-up path should the
			// check fail to fire; the test fails before it is used.
			cfg := wazero.NewRuntimeConfig().WithCloseOnContextDone(true)
			h := &stopHook{refill: 1000}
			r := newTestRuntime(t, cfg, h.hook)
			mod := instantiate(t, r, out, "spin")
			expectInterrupt(t, mod, h, "spin")
		})
	}
}

// expectInterrupt calls fn in a goroutine, checks it is still running after
// a while and has been calling the hook h, stops it through h and expects fn
// to end with exit code 137 within a second.
func expectInterrupt(t *testing.T, mod api.Module, h *stopHook, fn string, args ...uint64) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, err := mod.ExportedFunction(fn).Call(ctx, args...)
		done <- err
	}()
	select {
	case err := <-done:
		t.Fatalf("%s returned before it was stopped: %v", fn, err)
	case <-time.After(100 * time.Millisecond):
	}
	// The first check calls the hook (the countdown starts at 0); more
	// calls show the refilled countdown running out again and again.
	calls := h.calls.Load()
	if calls < 2 {
		t.Errorf("hook called %d times in 100ms of %s, want the guest to keep coming back", calls, fn)
	}
	h.Stop(mod)
	start := time.Now()
	select {
	case err := <-done:
		var exit *sys.ExitError
		if !errors.As(err, &exit) || exit.ExitCode() != 137 {
			t.Fatalf("%s ended with %v, want exit code 137", fn, err)
		}
		t.Logf("%s called the hook %d times in 100ms, stopped %v after Stop", fn, calls, time.Since(start))
	case <-time.After(time.Second):
		cancel()
		err := <-done
		t.Fatalf("%s still running a second after Stop (then ended with %v)", fn, err)
	}
}

func TestCustomSections(t *testing.T) {
	out, err := Instrument(bareModule().encode(), testOptions(false))
	if err != nil {
		t.Fatal(err)
	}
	m, err := parseModule(out)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, s := range m.sections {
		if s.id == secCustom {
			got = append(got, string(s.name))
		} else {
			got = append(got, sectionNames[s.id])
		}
	}
	want := []string{"type", "import", "function", "global", "export", "code", "name", "producers"}
	if len(got) != len(want) {
		t.Fatalf("sections %q, want %q", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("sections %q, want %q", got, want)
		}
	}
}

var sectionNames = [numSecIDs]string{
	"custom", "type", "import", "function", "table", "memory", "global",
	"export", "start", "element", "code", "data", "datacount", "tag",
}
