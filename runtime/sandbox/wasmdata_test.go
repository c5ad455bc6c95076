package sandbox

import (
	"encoding/binary"
	"testing"

	"github.com/eryx-dev/eryx/runtime/assets"
)

// The snapshot restores linear memory and __stack_pointer only: a second
// mutable global in the module would silently start from its initial value
// in every sandbox. This guards the build against growing one.
func TestModuleHasNoOtherMutableGlobals(t *testing.T) {
	a, err := assets.Load()
	if err != nil {
		t.Fatal(err)
	}
	wasm := a.Module
	mutable, exportedSP := 0, false
	for pos := 8; pos < len(wasm); {
		id := wasm[pos]
		size, n := binary.Uvarint(wasm[pos+1:])
		body := wasm[pos+1+n : pos+1+n+int(size)]
		pos += 1 + n + int(size)
		switch id {
		case 6:
			count, n := binary.Uvarint(body)
			b := body[n:]
			for i := uint64(0); i < count; i++ {
				if b[1] == 1 {
					mutable++
				}
				b = skipConstExpr(t, b[2:])
			}
		case 7:
			exportedSP = exportedSP || containsName(body, stackPointer)
		}
	}
	if mutable != 1 || !exportedSP {
		t.Fatalf("%d mutable globals (want 1: __stack_pointer), __stack_pointer exported: %v", mutable, exportedSP)
	}
}

// skipConstExpr skips a one-instruction constant expression and its end.
func skipConstExpr(t *testing.T, b []byte) []byte {
	t.Helper()
	op := b[0]
	b = b[1:]
	switch op {
	case 0x41, 0x42, 0x23: // i32.const, i64.const (LEB), global.get
		for b[0]&0x80 != 0 {
			b = b[1:]
		}
		b = b[1:]
	case 0x43:
		b = b[4:]
	case 0x44:
		b = b[8:]
	default:
		t.Fatalf("unexpected constant expression opcode %#x", op)
	}
	if b[0] != 0x0b {
		t.Fatalf("constant expression not terminated")
	}
	return b[1:]
}

func containsName(b []byte, name string) bool {
	for i := 0; i+len(name) <= len(b); i++ {
		if string(b[i:i+len(name)]) == name {
			return true
		}
	}
	return false
}

func TestStripDataSegments(t *testing.T) {
	a, err := assets.Load()
	if err != nil {
		t.Fatal(err)
	}
	stripped, segs, err := stripDataSegments(a.Module)
	if err != nil {
		t.Fatal(err)
	}
	total := 0
	for _, s := range segs {
		total += len(s.data)
	}
	if len(segs) == 0 || total == 0 || len(stripped) >= len(a.Module)-total+16 {
		t.Fatalf("%d segments of %d bytes; module %d -> %d bytes", len(segs), total, len(a.Module), len(stripped))
	}
	for _, bad := range [][]byte{nil, []byte("\x00asm\x01\x00\x00\x00\x0b\x05"), []byte("garbage!")} {
		if _, _, err := stripDataSegments(bad); err == nil {
			t.Errorf("accepted %q", bad)
		}
	}
}
