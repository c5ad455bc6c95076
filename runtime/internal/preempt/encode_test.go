package preempt

import (
	"encoding/binary"
	"fmt"
	"math"
)

// A tiny module encoder for building test inputs by hand. Sections that the
// instrumenter only copies (table, memory, global, element, data) are given
// as raw encoded items.

type testFuncType struct{ params, results []byte }

type testImport struct {
	module, name string
	kind         byte
	desc         []byte // encoded import description after the kind byte
}

type testFunc struct {
	typ    uint32
	locals [][2]uint32 // (count, value type) groups
	code   []byte      // instructions including the final end
}

type testExport struct {
	name string
	kind byte
	idx  uint32
}

type testCustom struct {
	name string
	data []byte
}

type testModule struct {
	types     []testFuncType
	imports   []testImport
	funcs     []testFunc
	tables    [][]byte
	memory    []byte // limits, nil for no memory
	globals   [][]byte
	exports   []testExport
	elems     [][]byte
	data      [][]byte
	dataCount bool
	customs   []testCustom // emitted after all other sections
}

// Value types.
const (
	tI32     = 0x7f
	tI64     = 0x7e
	tF32     = 0x7d
	tF64     = 0x7c
	tV128    = 0x7b
	tFuncRef = 0x70
	tEmpty   = 0x40 // empty block type
)

// Opcodes used by the tests.
const (
	opUnreachable  = 0x00
	opNop          = 0x01
	opBlock        = 0x02
	opLoop         = 0x03
	opIf           = 0x04
	opElse         = 0x05
	opEnd          = 0x0b
	opBr           = 0x0c
	opBrIf         = 0x0d
	opBrTable      = 0x0e
	opReturn       = 0x0f
	opCall         = 0x10
	opCallIndirect = 0x11
	opDrop         = 0x1a
	opSelectT      = 0x1c
	opLocalGet     = 0x20
	opLocalSet     = 0x21
	opLocalTee     = 0x22
	opGlobalGet    = 0x23
	opGlobalSet    = 0x24
	opTableGet     = 0x25
	opI32Load      = 0x28
	opI32Load8U    = 0x2d
	opI32Store     = 0x36
	opI32Store8    = 0x3a
	opMemorySize   = 0x3f
	opMemoryGrow   = 0x40
	opI32Const     = 0x41
	opI64Const     = 0x42
	opF32Const     = 0x43
	opF64Const     = 0x44
	opI32Eqz       = 0x45
	opI32GtS       = 0x4a
	opI32LeS       = 0x4c
	opI32GeU       = 0x4f
	opI32Add       = 0x6a
	opI32Sub       = 0x6b
	opI32Mul       = 0x6c
	opI32RemU      = 0x70
	opI32And       = 0x71
	opI64Add       = 0x7c
	opI64Xor       = 0x85
	opI64ExtendU   = 0xad
	opI64ExtendS   = 0xac
	opI32ReinterpF = 0xbc
	opI64ReinterpF = 0xbd
	opI32Extend8S  = 0xc0
	opRefNull      = 0xd0
	opRefIsNull    = 0xd1
	opRefFunc      = 0xd2
	opPrefixFC     = 0xfc
	opPrefixFD     = 0xfd
)

// ins concatenates instruction pieces: bytes, ints (one byte each) and
// already encoded byte slices.
func ins(parts ...any) []byte {
	var b []byte
	for _, p := range parts {
		switch v := p.(type) {
		case byte:
			b = append(b, v)
		case int:
			if v < 0 || v > 0xff {
				panic(fmt.Sprintf("ins: %d is not a byte", v))
			}
			b = append(b, byte(v))
		case []byte:
			b = append(b, v...)
		default:
			panic(fmt.Sprintf("ins: unsupported %T", p))
		}
	}
	return b
}

func uleb(v uint64) []byte {
	var b []byte
	for v >= 0x80 {
		b = append(b, byte(v)|0x80)
		v >>= 7
	}
	return append(b, byte(v))
}

func sleb(v int64) []byte {
	var b []byte
	for {
		c := byte(v & 0x7f)
		v >>= 7
		if (v == 0 && c&0x40 == 0) || (v == -1 && c&0x40 != 0) {
			return append(b, c)
		}
		b = append(b, c|0x80)
	}
}

func i32c(v int32) []byte { return ins(opI32Const, sleb(int64(v))) }
func i64c(v int64) []byte { return ins(opI64Const, sleb(v)) }

func f32c(bits uint32) []byte {
	return binary.LittleEndian.AppendUint32([]byte{opF32Const}, bits)
}

func f64c(bits uint64) []byte {
	return binary.LittleEndian.AppendUint64([]byte{opF64Const}, bits)
}

func f64v(v float64) []byte { return f64c(math.Float64bits(v)) }

func get(i uint32) []byte { return ins(opLocalGet, uleb(uint64(i))) }
func set(i uint32) []byte { return ins(opLocalSet, uleb(uint64(i))) }

// memarg encodes alignment (log2) and offset.
func memarg(align, offset uint32) []byte {
	return ins(uleb(uint64(align)), uleb(uint64(offset)))
}

func fc(sub uint32, imm ...byte) []byte { return ins(opPrefixFC, uleb(uint64(sub)), imm) }
func fd(sub uint32, imm ...byte) []byte { return ins(opPrefixFD, uleb(uint64(sub)), imm) }

// blockIdx encodes a type index as an s33 block type.
func blockIdx(idx int64) []byte { return sleb(idx) }

func name(s string) []byte { return append(uleb(uint64(len(s))), s...) }

func vec(items [][]byte) []byte {
	b := uleb(uint64(len(items)))
	for _, it := range items {
		b = append(b, it...)
	}
	return b
}

func encodeSection(id byte, payload []byte) []byte {
	return append(append([]byte{id}, uleb(uint64(len(payload)))...), payload...)
}

func (m testModule) encode() []byte {
	out := []byte{0x00, 'a', 's', 'm', 0x01, 0x00, 0x00, 0x00}
	add := func(id byte, items [][]byte) {
		if len(items) > 0 {
			out = append(out, encodeSection(id, vec(items))...)
		}
	}
	var items [][]byte
	for _, t := range m.types {
		items = append(items, ins(0x60, uleb(uint64(len(t.params))), t.params, uleb(uint64(len(t.results))), t.results))
	}
	add(secType, items)

	items = nil
	for _, im := range m.imports {
		items = append(items, ins(name(im.module), name(im.name), im.kind, im.desc))
	}
	add(secImport, items)

	items = nil
	for _, f := range m.funcs {
		items = append(items, uleb(uint64(f.typ)))
	}
	add(secFunction, items)
	add(secTable, m.tables)
	if m.memory != nil {
		add(secMemory, [][]byte{m.memory})
	}
	add(secGlobal, m.globals)

	items = nil
	for _, e := range m.exports {
		items = append(items, ins(name(e.name), e.kind, uleb(uint64(e.idx))))
	}
	add(secExport, items)
	add(secElement, m.elems)
	if m.dataCount {
		out = append(out, encodeSection(secDataCount, uleb(uint64(len(m.data))))...)
	}

	items = nil
	for _, f := range m.funcs {
		var locals [][]byte
		for _, l := range f.locals {
			locals = append(locals, ins(uleb(uint64(l[0])), byte(l[1])))
		}
		b := append(vec(locals), f.code...)
		items = append(items, append(uleb(uint64(len(b))), b...))
	}
	add(secCode, items)
	add(secData, m.data)
	for _, c := range m.customs {
		out = append(out, encodeSection(secCustom, append(name(c.name), c.data...))...)
	}
	return out
}

// hookImport is the usual hook: eryx.preempt of type index typ.
func hookImport(typ uint32) testImport {
	return testImport{module: "eryx", name: "preempt", kind: kindFunc, desc: uleb(uint64(typ))}
}

func funcType(params, results []byte) testFuncType { return testFuncType{params, results} }

func exportFunc(n string, idx uint32) testExport {
	return testExport{name: n, kind: kindFunc, idx: idx}
}

var (
	noTypes = []byte{}
	oneI32  = []byte{tI32}
	oneI64  = []byte{tI64}
)
