package preempt

import "fmt"

// reader walks one region of the binary. b is the whole binary cut at the end
// of the region, and p is an absolute offset, so error messages can point
// into the original file.
//
// Errors are sticky: after the first one every read returns zero and callers
// check err once per item instead of after every read.
type reader struct {
	b   []byte
	p   int
	err error
}

func newReader(wasm []byte, start, end int) reader {
	return reader{b: wasm[:end], p: start}
}

func (r *reader) remaining() int { return len(r.b) - r.p }

// failf records the first error, marking it malformed at the current offset.
func (r *reader) failf(format string, args ...any) {
	if r.err == nil {
		r.err = fmt.Errorf("%w: %s at offset %d", ErrMalformed, fmt.Sprintf(format, args...), r.p)
	}
}

func (r *reader) byte() byte {
	if r.p >= len(r.b) {
		r.failf("unexpected end")
		return 0
	}
	c := r.b[r.p]
	r.p++
	return c
}

// skip advances n raw bytes (float constants, lane indices, v128 literals).
func (r *reader) skip(n int) {
	if r.remaining() < n {
		r.failf("unexpected end")
		r.p = len(r.b)
		return
	}
	r.p += n
}

// u32 reads an unsigned LEB128 value of at most 32 bits.
func (r *reader) u32() uint32 {
	if r.p < len(r.b) && r.b[r.p] < 0x80 { // one-byte fast path: most indices
		c := r.b[r.p]
		r.p++
		return uint32(c)
	}
	var v uint32
	for shift := uint(0); ; shift += 7 {
		c := r.byte()
		if r.err != nil {
			return 0
		}
		if shift == 28 && c > 0x0f {
			r.failf("u32 LEB128 overflows")
			return 0
		}
		v |= uint32(c&0x7f) << shift
		if c < 0x80 {
			return v
		}
	}
}

// leb skips a LEB128 value of at most maxBytes bytes without decoding it.
// Immediates that are copied verbatim only need their length, and the
// engine validates their values later. The one-byte case is kept small
// enough to inline because it dominates real code.
func (r *reader) leb(maxBytes int) {
	if r.p < len(r.b) && r.b[r.p] < 0x80 {
		r.p++
		return
	}
	r.lebSlow(maxBytes)
}

func (r *reader) lebSlow(maxBytes int) {
	for i := 0; i < maxBytes; i++ {
		if r.p >= len(r.b) {
			r.failf("unexpected end")
			return
		}
		c := r.b[r.p]
		r.p++
		if c < 0x80 {
			return
		}
	}
	r.failf("LEB128 longer than %d bytes", maxBytes)
}

// Maximum encoded lengths of LEB128 values by bit width.
const (
	lebU32 = 5
	lebS32 = 5
	lebS33 = 5
	lebU64 = 10
	lebS64 = 10
)

// count reads a vector length and rejects one that cannot fit in the rest of
// the region (every element takes at least minSize bytes), so a corrupt
// length cannot make a caller loop billions of times or over-allocate.
func (r *reader) count(minSize int) int {
	n := r.u32()
	if r.err == nil && uint64(n)*uint64(minSize) > uint64(r.remaining()) {
		r.failf("vector length %d exceeds its section", n)
		return 0
	}
	return int(n)
}

// name skips a UTF-8 name and returns it without copying.
func (r *reader) name() []byte {
	n := r.count(1)
	if r.err != nil {
		return nil
	}
	s := r.b[r.p : r.p+n]
	r.p += n
	return s
}

// Reference type prefixes of the function-references/GC encoding, which are
// followed by a heap type; every other value type is a single byte.
const (
	refNullPrefix = 0x63
	refPrefix     = 0x64
)

func (r *reader) valType() {
	if c := r.byte(); c == refNullPrefix || c == refPrefix {
		r.leb(lebS33)
	}
}

// blockType skips a block type: 0x40 (empty), a value type, or a
// non-negative s33 type index. A single s33 read covers the one-byte forms
// too because they all have bit 7 clear.
func (r *reader) blockType() {
	if r.p < len(r.b) && (r.b[r.p] == refNullPrefix || r.b[r.p] == refPrefix) {
		r.valType()
		return
	}
	r.leb(lebS33)
}

// memarg skips alignment and offset. Bit 6 of the alignment field announces
// an explicit memory index (multi-memory); offsets may be 64-bit (memory64).
func (r *reader) memarg() {
	if align := r.u32(); align&0x40 != 0 {
		r.leb(lebU32)
	}
	r.leb(lebU64)
}

// appendU32 appends v as minimal unsigned LEB128.
func appendU32(b []byte, v uint32) []byte {
	for v >= 0x80 {
		b = append(b, byte(v)|0x80)
		v >>= 7
	}
	return append(b, byte(v))
}

// sizeU32 is the length of v as minimal unsigned LEB128.
func sizeU32(v uint32) int {
	n := 1
	for v >= 0x80 {
		v >>= 7
		n++
	}
	return n
}
