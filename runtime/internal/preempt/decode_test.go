package preempt

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

// threes is an n-byte LEB128 whose every byte carries the payload 3. Used as
// an immediate it makes decoding mistakes visible: a decoder that reads too
// few bytes meets a stray 0x03, which is the loop opcode, and one that reads
// too many swallows the loop that follows.
func threes(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = 0x83
	}
	b[n-1] = 0x03
	return b
}

func rep(b byte, n int) []byte {
	out := make([]byte, n)
	for i := range out {
		out[i] = b
	}
	return out
}

type decodeCase struct {
	name  string
	instr []byte
}

func decodeCases() []decodeCase {
	cases := []decodeCase{
		{"block type index", ins(opBlock, threes(2), opEnd)},
		{"block ref type", ins(opBlock, 0x63, threes(2), opEnd)},
		{"if else", ins(opIf, tI32, opElse, opEnd)},
		{"br_table", ins(opBrTable, 3, threes(2), threes(1), threes(5), threes(3))},
		{"call_indirect", ins(opCallIndirect, threes(3), threes(2))},
		{"return_call_indirect", ins(0x13, threes(3), threes(2))},
		{"i32.const", ins(opI32Const, threes(5))},
		{"i64.const", ins(opI64Const, threes(10))},
		{"f32.const", ins(opF32Const, rep(3, 4))},
		{"f64.const", ins(opF64Const, rep(3, 8))},
		{"select t", ins(opSelectT, 2, tV128, 0x64, threes(3))},
		{"ref.null funcref", ins(opRefNull, tFuncRef)},
		{"ref.null type index", ins(opRefNull, threes(3))},
		{"memarg with memory index", ins(opI32Load, 0x43, threes(2), threes(4))},
		{"atomic.fence", ins(0xfe, 0x03, 0x00)},
	}
	for _, op := range []byte{0x0c, 0x0d, 0x10, 0x12, 0x20, 0x21, 0x22, 0x23, 0x24, 0x25, 0x26, 0x3f, 0x40, 0xd2} {
		cases = append(cases, decodeCase{fmt.Sprintf("index op 0x%02x", op), ins(op, threes(3))})
	}
	for op := 0x28; op <= 0x3e; op++ {
		cases = append(cases, decodeCase{fmt.Sprintf("memarg op 0x%02x", op), ins(op, threes(2), threes(5))})
	}
	for op := 0x45; op <= 0xc4; op++ {
		cases = append(cases, decodeCase{fmt.Sprintf("plain op 0x%02x", op), ins(op)})
	}
	for _, op := range []byte{opUnreachable, opNop, opReturn, opDrop, 0x1b, opRefIsNull} {
		cases = append(cases, decodeCase{fmt.Sprintf("plain op 0x%02x", op), ins(op)})
	}
	for sub, n := range fcImmediates {
		imm := make([]byte, 0)
		for range n {
			imm = append(imm, threes(2)...)
		}
		cases = append(cases, decodeCase{fmt.Sprintf("0xfc %d", sub), fc(uint32(sub), imm...)})
	}
	return append(cases, simdDecodeCases()...)
}

// fcImmediates is written out independently of fcIndices, from the spec.
var fcImmediates = []int{0, 0, 0, 0, 0, 0, 0, 0, 2, 1, 2, 1, 2, 1, 2, 1, 1, 1}

func simdDecodeCases() []decodeCase {
	var cases []decodeCase
	add := func(sub uint32, imm ...byte) {
		cases = append(cases, decodeCase{fmt.Sprintf("0xfd 0x%x", sub), fd(sub, imm...)})
	}
	mem := append(threes(2), threes(3)...)
	for sub := uint32(0x00); sub <= 0x0b; sub++ {
		add(sub, mem...)
	}
	add(0x0c, rep(3, 16)...) // v128.const
	add(0x0d, rep(3, 16)...) // i8x16.shuffle
	for sub := uint32(0x15); sub <= 0x22; sub++ {
		add(sub, 3) // lane index
	}
	for sub := uint32(0x54); sub <= 0x5b; sub++ {
		add(sub, append(mem, 3)...)
	}
	add(0x5c, mem...)
	add(0x5d, mem...)
	for _, sub := range []uint32{0x0e, 0x14, 0x23, 0x4d, 0x53, 0x5e, 0x62, 0xae, 0xba, 0xff, 0x100, 0x113} {
		add(sub)
	}
	for _, sub := range []uint32{0x00, 0x01, 0x02, 0x10, 0x2e, 0x4e} {
		cases = append(cases, decodeCase{fmt.Sprintf("0xfe 0x%x", sub), ins(0xfe, uleb(uint64(sub)), mem)})
	}
	return cases
}

// TestDecodeInstructionLengths checks the decoder consumes exactly each
// instruction: it is followed by a loop whose check must land right after
// "loop 0x40" and nowhere else.
func TestDecodeInstructionLengths(t *testing.T) {
	for _, c := range decodeCases() {
		t.Run(c.name, func(t *testing.T) {
			locals := ins(2, threes(3), tI32, 1, 0x63, threes(2))
			b := ins(locals, c.instr, opLoop, tEmpty, opEnd, opEnd)
			var cs codeScan
			err := cs.scanBody(b, body{start: 0, end: len(b)}, true)
			if err != nil {
				t.Fatalf("% x: %v", c.instr, err)
			}
			want := []int{len(locals), len(locals) + len(c.instr) + 2}
			if !equalInts(cs.points, want) || cs.loops != 1 {
				t.Errorf("% x: checks at %v (%d loops), want %v", c.instr, cs.points, cs.loops, want)
			}
		})
	}
}

func equalInts(a, b []int) bool {
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

func TestDecodeUnknownOpcodes(t *testing.T) {
	var unknown [][]byte
	for _, r := range [][2]int{{0x06, 0x0a}, {0x14, 0x19}, {0x1d, 0x1f}, {0x27, 0x27}, {0xc5, 0xcf}, {0xd3, 0xfb}, {0xff, 0xff}} {
		for op := r[0]; op <= r[1]; op++ {
			unknown = append(unknown, []byte{byte(op)})
		}
	}
	unknown = append(unknown, fc(18), fc(1000), fd(0x114), fe(0x04), fe(0x0f), fe(0x4f))
	for _, instr := range unknown {
		b := ins(0, opNop, instr, opEnd)
		var cs codeScan
		err := cs.scanBody(b, body{start: 0, end: len(b)}, false)
		want := fmt.Sprintf("0x%02x", instr[0])
		if !errors.Is(err, ErrUnknownOpcode) || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "at offset 2") {
			t.Errorf("% x: got %v, want %v naming %s at offset 2", instr, err, ErrUnknownOpcode, want)
		}
	}
}

func fe(sub uint32) []byte { return ins(0xfe, uleb(uint64(sub))) }

func TestDecodeMalformedBodies(t *testing.T) {
	cases := []struct {
		name string
		body []byte
	}{
		{"no final end", ins(0, opNop)},
		{"unclosed block", ins(0, opBlock, tEmpty, opEnd)},
		{"code after final end", ins(0, opEnd, opNop)},
		{"truncated immediate", ins(0, opF64Const, 1, 2, 3)},
		{"truncated LEB", ins(0, opI32Const, 0x80)},
		{"overlong LEB", ins(0, opI64Const, rep(0x80, 10), 0)},
		{"u32 overflow", ins(0, opPrefixFC, 0x80, 0x80, 0x80, 0x80, 0x10, opEnd)},
		{"br_table longer than body", ins(0, opBrTable, uleb(1<<30), opEnd)},
		{"too many local groups", ins(uleb(1000), opEnd)},
	}
	for _, c := range cases {
		var cs codeScan
		err := cs.scanBody(c.body, body{start: 0, end: len(c.body)}, false)
		if !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: got %v, want %v", c.name, err, ErrMalformed)
		}
	}
}
