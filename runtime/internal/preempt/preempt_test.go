package preempt

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"math"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/sys"
)

const testFlag = "eryx_preempt"

func testOptions(functionEntry bool) Options {
	return Options{HookModule: "eryx", HookName: "preempt", FlagExport: testFlag, FunctionEntry: functionEntry}
}

type testCall struct {
	fn   string
	args []uint64
	want []uint64
}

type instrumentCase struct {
	name  string
	mod   testModule
	env   *testModule // instantiated as module "env" before mod, when set
	calls []testCall
	loops int
	flag  uint32 // expected flag global index
	hook  uint32 // expected hook function index
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
// defines two globals, so the flag is global 3 and the hook function 1.
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
		{name: "imports of every kind", mod: imports, env: &env, loops: 1, flag: 3, hook: 1,
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
	t.Cleanup(func() { r.Close(ctx) })
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
	wantStats := Stats{Functions: len(c.mod.funcs), Loops: c.loops, Checks: wantChecks, FlagIndex: c.flag, HookIndex: c.hook}
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
	flag, ok := instMod.ExportedGlobal(testFlag).(api.MutableGlobal)
	if !ok {
		t.Fatalf("flag export %q missing or immutable", testFlag)
	}
	if flag.Type() != api.ValueTypeI32 || flag.Get() != 0 {
		t.Errorf("flag type %v value %d, want i32 0", flag.Type(), flag.Get())
	}
	if n := hookCalls.Load(); n != 0 {
		t.Errorf("hook called %d times with the flag clear", n)
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
		opGlobalGet, 0, opIf, tEmpty, opCall, 0, opEnd, // the check
		opBr, 0, opEnd, opEnd)
	want.globals = [][]byte{{tI32, 0x01, opI32Const, 0x00, opEnd}}
	want.exports = append(want.exports, testExport{name: testFlag, kind: kindGlobal, idx: 0})
	if w := want.encode(); !bytes.Equal(out, w) {
		t.Errorf("output\n% x\nwant\n% x", out, w)
	}
}

// TestHookRunsWhenFlagSet checks that the flag really is the global the
// checks read: with it set, the hook runs, and a hook that clears it lets
// the function finish normally.
func TestHookRunsWhenFlagSet(t *testing.T) {
	imports, env := importsModule()
	cases := []struct {
		name string
		mod  testModule
		env  *testModule
		call testCall
	}{
		{"nested loops", nestedModule(), nil, testCall{"f", u64s(10, 7), u64s(945)}},
		{"imports of every kind", imports, &env, testCall{"f", u64s(3), u64s(1056)}},
		{"br_table", brTableModule(), nil, testCall{"classify", u64s(7), u64s(232)}},
	}
	for _, c := range cases {
		for _, entry := range []bool{false, true} {
			t.Run(c.name, func(t *testing.T) {
				out, err := Instrument(c.mod.encode(), testOptions(entry))
				if err != nil {
					t.Fatal(err)
				}
				var hookCalls atomic.Int64
				r := newTestRuntime(t, nil, func(_ context.Context, m api.Module) {
					m.ExportedGlobal(testFlag).(api.MutableGlobal).Set(0)
					hookCalls.Add(1)
				})
				if c.env != nil {
					instantiate(t, r, c.env.encode(), "env")
				}
				mod := instantiate(t, r, out, "instrumented")
				for round := int64(1); round <= 2; round++ {
					mod.ExportedGlobal(testFlag).(api.MutableGlobal).Set(1)
					got, err := mod.ExportedFunction(c.call.fn).Call(context.Background(), c.call.args...)
					if err != nil || !equalU64s(got, c.call.want) {
						t.Fatalf("%s = %v, %v; want %v", c.call.fn, got, err, c.call.want)
					}
					if n := hookCalls.Load(); n != round {
						t.Fatalf("after call %d the hook ran %d times, want %d", round, n, round)
					}
				}
			})
		}
	}
}

// TestSpinIsInterrupted runs an endless loop and stops it through the flag.
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
			r := newTestRuntime(t, cfg, func(context.Context, api.Module) { panic(sys.NewExitError(137)) })
			mod := instantiate(t, r, out, "spin")
			expectInterrupt(t, mod, "spin")
		})
	}
}

// expectInterrupt calls fn in a goroutine, checks it is still running after
// a while, sets the flag and expects fn to end with exit code 137 within a
// second.
func expectInterrupt(t *testing.T, mod api.Module, fn string, args ...uint64) {
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
		t.Fatalf("%s returned before the flag was set: %v", fn, err)
	case <-time.After(100 * time.Millisecond):
	}
	mod.ExportedGlobal(testFlag).(api.MutableGlobal).Set(1)
	start := time.Now()
	select {
	case err := <-done:
		var exit *sys.ExitError
		if !errors.As(err, &exit) || exit.ExitCode() != 137 {
			t.Fatalf("%s ended with %v, want exit code 137", fn, err)
		}
		t.Logf("%s stopped %v after the flag was set", fn, time.Since(start))
	case <-time.After(time.Second):
		cancel()
		<-done
		t.Fatalf("%s still running a second after the flag was set", fn)
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
