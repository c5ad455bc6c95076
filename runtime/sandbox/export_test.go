package sandbox

import (
	"reflect"
)

// Test hooks: the Go side's view of an instance, to prove what a reset
// leaves behind.

// MemoryForTest returns a copy of the sandbox's whole linear memory.
func (sb *Sandbox) MemoryForTest() []byte {
	mem := sb.mod.Memory()
	b, _ := mem.Read(0, mem.Size())
	return append([]byte(nil), b...)
}

// ImageForTest returns a copy of the engine's memory image.
func (e *Engine) ImageForTest() []byte { return append([]byte(nil), e.image.view...) }

// GlobalsForTest returns the values of the sandbox's mutable globals.
func (sb *Sandbox) GlobalsForTest() map[string]uint64 {
	out := map[string]uint64{}
	for _, name := range sb.eng.globals {
		out[name] = sb.mod.ExportedGlobal(name).Get()
	}
	return out
}

// InitialGlobalsForTest returns what Reset sets the mutable globals to.
func (sb *Sandbox) InitialGlobalsForTest() map[string]uint64 {
	out := map[string]uint64{}
	for _, g := range sb.globals {
		for _, name := range sb.eng.globals {
			if sb.mod.ExportedGlobal(name) == g.g {
				out[name] = g.v
			}
		}
	}
	return out
}

// TableForTest returns a copy of the references in the instance's tables
// (wazero's exported ModuleInstance.Tables[i].References).
func (sb *Sandbox) TableForTest() [][]uintptr {
	var out [][]uintptr
	tables := reflect.ValueOf(sb.mod).Elem().FieldByName("Tables")
	for i := range tables.Len() {
		refs := tables.Index(i).Elem().FieldByName("References")
		row := make([]uintptr, refs.Len())
		for j := range row {
			row[j] = uintptr(refs.Index(j).Uint())
		}
		out = append(out, row)
	}
	return out
}

// ResetStatsForTest reports what in-place resets of the sandbox did.
func (sb *Sandbox) ResetStatsForTest() (resets, restored, zeroed, dropped int64) {
	r := sb.mem.resets
	return r.Resets, r.PagesRestored, r.PagesZeroed, r.PagesDropped
}
