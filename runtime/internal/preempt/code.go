package preempt

import "fmt"

// immKind says what immediates follow a one-byte opcode. The decoder only
// needs to find where each instruction ends; values are copied verbatim.
type immKind uint8

const (
	immInvalid immKind = iota // not an opcode this decoder knows
	immNone
	immEnd      // end: closes a block or the body
	immBlock    // block, if: block type
	immLoop     // loop: block type, and the check goes after it
	immIndex    // one u32 index (call, br, local.get, memory.size, ...)
	immTwoIndex // two u32 indices (call_indirect, return_call_indirect)
	immBrTable  // vector of labels plus default
	immMemarg   // loads and stores
	immI32      // s32 LEB
	immI64      // s64 LEB
	immF32      // 4 raw bytes
	immF64      // 8 raw bytes
	immSelectT  // vector of value types
	immHeapType // ref.null
	immPrefixFC // bulk memory, table ops, saturating truncation
	immPrefixFD // SIMD
	immPrefixFE // threads (atomics)
)

var opcodes = buildOpcodeTable()

func buildOpcodeTable() (t [256]immKind) {
	set := func(k immKind, ops ...byte) {
		for _, op := range ops {
			t[op] = k
		}
	}
	setRange := func(k immKind, lo, hi byte) {
		for op := int(lo); op <= int(hi); op++ {
			t[op] = k
		}
	}
	set(immNone, 0x00, 0x01, 0x05, 0x0f, 0x1a, 0x1b, 0xd1) // unreachable nop else return drop select ref.is_null
	set(immEnd, 0x0b)
	set(immBlock, 0x02, 0x04)
	set(immLoop, 0x03)
	set(immIndex,
		0x0c, 0x0d, // br br_if
		0x10, 0x12, // call return_call
		0x20, 0x21, 0x22, // local.get/set/tee
		0x23, 0x24, // global.get/set
		0x25, 0x26, // table.get/set
		0x3f, 0x40, // memory.size/grow: reserved 0x00, a memory index with multi-memory
		0xd2, // ref.func
	)
	set(immTwoIndex, 0x11, 0x13) // call_indirect return_call_indirect: type, table
	set(immBrTable, 0x0e)
	setRange(immMemarg, 0x28, 0x3e)
	set(immI32, 0x41)
	set(immI64, 0x42)
	set(immF32, 0x43)
	set(immF64, 0x44)
	setRange(immNone, 0x45, 0xc4) // numeric ops, including sign extension 0xc0-0xc4
	set(immSelectT, 0x1c)
	set(immHeapType, 0xd0)
	set(immPrefixFC, 0xfc)
	set(immPrefixFD, 0xfd)
	set(immPrefixFE, 0xfe)
	return t
}

// fcIndices is the number of u32 immediates of each 0xFC sub-opcode:
// 0-7 saturating truncations; 8 memory.init data+mem; 9 data.drop;
// 10 memory.copy mem+mem; 11 memory.fill mem; 12 table.init elem+table;
// 13 elem.drop; 14 table.copy table+table; 15-17 table.grow/size/fill.
// The "reserved 0x00" bytes are read as LEB indices, which they are under
// multi-memory, and a single 0x00 byte either way.
var fcIndices = [...]uint8{0, 0, 0, 0, 0, 0, 0, 0, 2, 1, 2, 1, 2, 1, 2, 1, 1, 1}

// body locates one function body in the input.
type body struct {
	start, end int // locals and expression, without the size prefix
	checks     int // checks inserted into it
}

// codeScan is the result of walking the code section.
type codeScan struct {
	count  uint32 // number of bodies
	bodies []body
	points []int // input offsets before which a check goes, ascending
	loops  int
	// Instructions that change module state other than memory and
	// globals, counted for Inspect.
	tableWrites int // table.set, table.grow, table.fill, table.copy, table.init, elem.drop
	dataOps     int // memory.init, data.drop
}

// scanCode walks every function body and records where checks go. This is
// the only pass over instructions; writing the output is then plain copying.
func (m *module) scanCode(functionEntry bool) (codeScan, error) {
	var cs codeScan
	r, ok := m.payload(secCode)
	if !ok {
		return cs, nil
	}
	n := r.count(2)
	cs.count = uint32(n)
	cs.bodies = make([]body, 0, n)
	// A rough guess at one loop per 200 bytes of code avoids most regrowth.
	cs.points = make([]int, 0, r.remaining()/200+n)
	for i := 0; i < n && r.err == nil; i++ {
		size := r.count(1)
		if r.err != nil {
			break
		}
		b := body{start: r.p, end: r.p + size}
		before := len(cs.points)
		if err := cs.scanBody(m.wasm, b, functionEntry); err != nil {
			return cs, err
		}
		b.checks = len(cs.points) - before
		cs.bodies = append(cs.bodies, b)
		r.p = b.end
	}
	if r.err == nil && r.remaining() != 0 {
		r.failf("trailing bytes in code section")
	}
	return cs, r.err
}

// scanBody decodes one body, appending check positions to cs.points.
func (cs *codeScan) scanBody(wasm []byte, b body, functionEntry bool) error {
	r := newReader(wasm, b.start, b.end)
	groups := r.count(2)
	for i := 0; i < groups && r.err == nil; i++ {
		r.u32() // count
		r.valType()
	}
	if r.err != nil {
		return r.err
	}
	if functionEntry {
		cs.points = append(cs.points, r.p)
	}
	if err := r.expr(cs); err != nil {
		return err
	}
	if r.p != len(r.b) {
		r.failf("instructions after the final end")
	}
	return r.err
}

// expr decodes instructions up to and including the end that closes the
// expression (a function body or a constant expression). When cs is not
// nil it records a check position after each loop's block type.
func (r *reader) expr(cs *codeScan) error {
	depth := 0 // open blocks; the expression itself is closed by the final end
	for r.p < len(r.b) {
		at := r.p
		op := r.b[at]
		r.p++
		switch opcodes[op] {
		case immNone:
		case immEnd:
			if depth == 0 {
				return r.err
			}
			depth--
		case immBlock:
			r.blockType()
			depth++
		case immLoop:
			r.blockType()
			depth++
			if cs != nil {
				cs.points = append(cs.points, r.p)
				cs.loops++
			}
		case immIndex:
			if op == 0x26 && cs != nil { // table.set
				cs.tableWrites++
			}
			r.leb(lebU32)
		case immTwoIndex:
			r.leb(lebU32)
			r.leb(lebU32)
		case immBrTable:
			labels := r.count(1)
			for i := 0; i <= labels && r.err == nil; i++ { // labels plus the default
				r.leb(lebU32)
			}
		case immMemarg:
			r.memarg()
		case immI32:
			r.leb(lebS32)
		case immI64:
			r.leb(lebS64)
		case immF32:
			r.skip(4)
		case immF64:
			r.skip(8)
		case immSelectT:
			r.skipValTypes()
		case immHeapType:
			r.leb(lebS33)
		case immPrefixFC:
			sub := r.prefixFC(at)
			if cs != nil {
				switch sub {
				case 8, 9:
					cs.dataOps++
				case 12, 13, 14, 15, 17:
					cs.tableWrites++
				}
			}
		case immPrefixFD:
			r.prefixFD(at)
		case immPrefixFE:
			r.prefixFE(at)
		default:
			return unknownOpcode(at, op)
		}
		if r.err != nil {
			return r.err
		}
	}
	r.failf("expression without final end")
	return r.err
}

func unknownOpcode(at int, op byte, sub ...uint32) error {
	if len(sub) > 0 {
		return fmt.Errorf("%w 0x%02x 0x%x at offset %d", ErrUnknownOpcode, op, sub[0], at)
	}
	return fmt.Errorf("%w 0x%02x at offset %d", ErrUnknownOpcode, op, at)
}

func (r *reader) prefixFC(at int) uint32 {
	sub := r.u32()
	if r.err != nil {
		return sub
	}
	if sub >= uint32(len(fcIndices)) {
		r.err = unknownOpcode(at, 0xfc, sub)
		return sub
	}
	for range fcIndices[sub] {
		r.leb(lebU32)
	}
	return sub
}

// prefixFD skips the immediates of a SIMD instruction. Only a few ranges
// carry immediates; everything else up to 0xff, and the relaxed-SIMD ops
// 0x100-0x113, has none. A few unassigned codes inside those ranges are
// accepted here and left for the engine's validator to reject.
func (r *reader) prefixFD(at int) {
	sub := r.u32()
	if r.err != nil {
		return
	}
	switch {
	case sub <= 0x0b: // v128.load*, load*_splat, v128.store
		r.memarg()
	case sub == 0x0c || sub == 0x0d: // v128.const, i8x16.shuffle
		r.skip(16)
	case sub >= 0x15 && sub <= 0x22: // extract_lane, replace_lane
		r.skip(1)
	case sub >= 0x54 && sub <= 0x5b: // load*_lane, store*_lane
		r.memarg()
		r.skip(1)
	case sub == 0x5c || sub == 0x5d: // v128.load32_zero, v128.load64_zero
		r.memarg()
	case sub <= 0x113:
	default:
		r.err = unknownOpcode(at, 0xfd, sub)
	}
}

// prefixFE skips the immediates of an atomic instruction: atomic.fence has a
// reserved byte, the others a memarg.
func (r *reader) prefixFE(at int) {
	sub := r.u32()
	if r.err != nil {
		return
	}
	switch {
	case sub <= 0x02 || (sub >= 0x10 && sub <= 0x4e):
		r.memarg()
	case sub == 0x03:
		r.byte()
	default:
		r.err = unknownOpcode(at, 0xfe, sub)
	}
}
