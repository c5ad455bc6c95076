package sandbox

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// dataSegment is an active data segment of memory 0 at a constant offset.
type dataSegment struct {
	offset uint32
	data   []byte
}

// stripDataSegments returns the module without its active data segments,
// and the segments. Sandboxes start from a memory image that already holds
// the (since modified) data, so letting wazero write the original segments
// at every instantiation would both cost time and clobber the image; the
// pre-initialisation writes them itself.
func stripDataSegments(wasm []byte) ([]byte, []dataSegment, error) {
	if len(wasm) < 8 || string(wasm[:4]) != "\x00asm" {
		return nil, nil, errors.New("not a wasm module")
	}
	out := append([]byte(nil), wasm[:8]...)
	var segs []dataSegment
	for pos := 8; pos < len(wasm); {
		id := wasm[pos]
		size, n := binary.Uvarint(wasm[pos+1:])
		if n <= 0 || pos+1+n+int(size) > len(wasm) {
			return nil, nil, fmt.Errorf("malformed section at offset %d", pos)
		}
		body := wasm[pos+1+n : pos+1+n+int(size)]
		next := pos + 1 + n + int(size)
		switch id {
		case 11: // data
			var err error
			segs, err = parseDataSection(body)
			if err != nil {
				return nil, nil, err
			}
			out = append(out, 11, 1, 0) // an empty data section
		case 12: // data count: must agree with the (now empty) data section
			out = append(out, 12, 1, 0)
		default:
			out = append(out, wasm[pos:next]...)
		}
		pos = next
	}
	return out, segs, nil
}

func parseDataSection(b []byte) ([]dataSegment, error) {
	count, n := binary.Uvarint(b)
	if n <= 0 {
		return nil, errors.New("malformed data section")
	}
	b = b[n:]
	segs := make([]dataSegment, 0, count)
	for i := uint64(0); i < count; i++ {
		flags, n := binary.Uvarint(b)
		if n <= 0 || flags != 0 {
			// Passive segments or other memories: not produced by our build.
			return nil, fmt.Errorf("data segment %d: unsupported flags %d", i, flags)
		}
		b = b[n:]
		// The offset must be `i32.const k; end`.
		if len(b) < 2 || b[0] != 0x41 {
			return nil, fmt.Errorf("data segment %d: offset is not an i32.const", i)
		}
		off, n := readSLEB32(b[1:])
		if n <= 0 || 1+n >= len(b) || b[1+n] != 0x0b {
			return nil, fmt.Errorf("data segment %d: malformed offset", i)
		}
		b = b[1+n+1:]
		size, n := binary.Uvarint(b)
		if n <= 0 || n+int(size) > len(b) {
			return nil, fmt.Errorf("data segment %d: malformed bytes", i)
		}
		segs = append(segs, dataSegment{offset: uint32(off), data: b[n : n+int(size)]})
		b = b[n+int(size):]
	}
	return segs, nil
}

// readSLEB32 decodes a signed LEB128 (not Go's zig-zag varint) and returns
// the value and the bytes read, or n <= 0 when malformed.
func readSLEB32(b []byte) (int32, int) {
	var v int64
	var shift uint
	for i := 0; i < len(b) && i < 5; i++ {
		c := b[i]
		v |= int64(c&0x7f) << shift
		shift += 7
		if c&0x80 == 0 {
			if shift < 64 && c&0x40 != 0 {
				v |= -1 << shift
			}
			return int32(v), i + 1
		}
	}
	return 0, 0
}
