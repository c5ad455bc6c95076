package preempt

import (
	"bytes"
	"fmt"
)

// Section ids from the binary format.
const (
	secCustom    = 0
	secType      = 1
	secImport    = 2
	secFunction  = 3
	secTable     = 4
	secMemory    = 5
	secGlobal    = 6
	secExport    = 7
	secStart     = 8
	secElement   = 9
	secCode      = 10
	secData      = 11
	secDataCount = 12
	secTag       = 13 // exception handling; only ordered, never parsed
	numSecIDs    = 14
)

// Import and export kinds.
const (
	kindFunc   = 0x00
	kindTable  = 0x01
	kindMemory = 0x02
	kindGlobal = 0x03
	kindTag    = 0x04
)

// sectionRank gives the order in which non-custom sections must appear. It
// differs from the id order: data count (12) precedes code (10), and tag (13)
// sits between memory and global.
var sectionRank = [numSecIDs]int{
	secType: 1, secImport: 2, secFunction: 3, secTable: 4, secMemory: 5,
	secTag: 6, secGlobal: 7, secExport: 8, secStart: 9, secElement: 10,
	secDataCount: 11, secCode: 12, secData: 13,
}

var wasmMagic = []byte{0x00, 'a', 's', 'm'}

const headerSize = 8 // magic plus version

// section is one section's id and payload bounds in the input.
type section struct {
	id         byte
	start, end int
	name       []byte // custom sections only
}

// module is the input binary split into sections, with the few facts the
// rewrite needs.
type module struct {
	wasm     []byte
	sections []section
	index    [numSecIDs]int // position in sections by id, -1 when absent
}

func parseModule(wasm []byte) (*module, error) {
	if len(wasm) < headerSize || !bytes.Equal(wasm[:4], wasmMagic) {
		return nil, fmt.Errorf("%w: missing \\0asm header", ErrNotWasm)
	}
	if v := wasm[4:8]; !bytes.Equal(v, []byte{1, 0, 0, 0}) {
		// Version 1 is the core format; components use a different one.
		return nil, fmt.Errorf("%w: % x", ErrUnsupportedVersion, v)
	}
	m := &module{wasm: wasm}
	for i := range m.index {
		m.index[i] = -1
	}
	r := newReader(wasm, headerSize, len(wasm))
	lastRank := 0
	for r.remaining() > 0 && r.err == nil {
		s, err := readSectionHeader(&r)
		if err != nil {
			return nil, err
		}
		if s.id != secCustom {
			rank := sectionRank[s.id]
			if rank <= lastRank {
				return nil, fmt.Errorf("%w: section %d out of order or repeated at offset %d", ErrMalformed, s.id, s.start)
			}
			lastRank = rank
			m.index[s.id] = len(m.sections)
		}
		m.sections = append(m.sections, s)
	}
	return m, r.err
}

func readSectionHeader(r *reader) (section, error) {
	at := r.p
	id := r.byte()
	size := r.u32()
	if r.err != nil {
		return section{}, r.err
	}
	if id >= numSecIDs {
		return section{}, fmt.Errorf("%w: unknown section id %d at offset %d", ErrMalformed, id, at)
	}
	if int(size) > r.remaining() {
		return section{}, fmt.Errorf("%w: section %d at offset %d overruns the binary by %d bytes",
			ErrMalformed, id, at, int(size)-r.remaining())
	}
	s := section{id: id, start: r.p, end: r.p + int(size)}
	r.p = s.end
	if id == secCustom {
		nr := newReader(r.b, s.start, s.end)
		s.name = nr.name()
		if nr.err != nil {
			return section{}, nr.err
		}
	}
	return s, nil
}

// payload returns a reader over the section with the given id, and whether
// the section exists.
func (m *module) payload(id int) (reader, bool) {
	i := m.index[id]
	if i < 0 {
		return reader{}, false
	}
	s := m.sections[i]
	return newReader(m.wasm, s.start, s.end), true
}

// importInfo summarises the import section.
type importInfo struct {
	funcs, globals int
	hookFound      bool
	hookIndex      uint32 // function index of the hook
	hookType       uint32 // its type index
	hookKind       byte   // kind of the first import with the hook's name
	hookKindFound  bool
}

// hookInfo is what the rewrite needs from the import section.
type hookInfo struct {
	index           uint32 // function index of the hook
	importedGlobals int    // the countdown's index counts after these
}

// findHook locates the hook import and checks that its type is () -> ().
func (m *module) findHook(module, name string) (hookInfo, error) {
	info, err := m.imports(module, name)
	if err != nil {
		return hookInfo{}, err
	}
	if !info.hookFound {
		if info.hookKindFound {
			return hookInfo{}, fmt.Errorf("%w: %s.%s is imported as kind %d, not a function", ErrHookType, module, name, info.hookKind)
		}
		return hookInfo{}, fmt.Errorf("%w: %s.%s", ErrHookNotFound, module, name)
	}
	empty, err := m.isEmptyFuncType(info.hookType)
	if err != nil {
		return hookInfo{}, err
	}
	if !empty {
		return hookInfo{}, fmt.Errorf("%w: %s.%s has type index %d", ErrHookType, module, name, info.hookType)
	}
	return hookInfo{index: info.hookIndex, importedGlobals: info.globals}, nil
}

// imports walks the import section, counting imported functions and globals
// (each kind has its own index space, defined items follow the imports) and
// locating the first function import named module.name.
func (m *module) imports(module, name string) (importInfo, error) {
	var info importInfo
	r, ok := m.payload(secImport)
	if !ok {
		return info, nil
	}
	n := r.count(4)
	for i := 0; i < n && r.err == nil; i++ {
		mod, field := r.name(), r.name()
		kind := r.byte()
		matches := r.err == nil && string(mod) == module && string(field) == name
		if matches && !info.hookKindFound {
			info.hookKindFound, info.hookKind = true, kind
		}
		switch kind {
		case kindFunc:
			typ := r.u32()
			if matches && !info.hookFound {
				info.hookFound, info.hookIndex, info.hookType = true, uint32(info.funcs), typ
			}
			info.funcs++
		case kindTable:
			r.valType()
			r.limits()
		case kindMemory:
			r.limits()
		case kindGlobal:
			r.valType()
			r.byte() // mutability
			info.globals++
		case kindTag:
			r.byte() // attribute
			r.u32()  // type index
		default:
			r.failf("unknown import kind %d", kind)
		}
	}
	if r.err == nil && r.remaining() != 0 {
		r.failf("trailing bytes in import section")
	}
	return info, r.err
}

// limits skips table or memory limits: a flags byte, a minimum and, when bit
// 0 of the flags is set, a maximum. Values may be 64-bit (memory64).
func (r *reader) limits() {
	flags := r.byte()
	r.leb(lebU64)
	if flags&0x01 != 0 {
		r.leb(lebU64)
	}
}

// funcTypeForm introduces a function type in the type section.
const funcTypeForm = 0x60

// isEmptyFuncType reports whether type index idx is () -> ().
func (m *module) isEmptyFuncType(idx uint32) (bool, error) {
	r, ok := m.payload(secType)
	if !ok {
		return false, fmt.Errorf("%w: hook type %d but no type section", ErrMalformed, idx)
	}
	n := r.count(3)
	if r.err == nil && uint64(idx) >= uint64(n) {
		return false, fmt.Errorf("%w: hook type index %d out of range (%d types)", ErrMalformed, idx, n)
	}
	for i := 0; r.err == nil; i++ {
		if form := r.byte(); form != funcTypeForm && r.err == nil {
			// Recursive and subtype groups (GC) are not supported by the
			// engine either; refuse rather than misread them.
			r.failf("unsupported type form 0x%02x", form)
			break
		}
		params := r.skipValTypes()
		results := r.skipValTypes()
		if uint32(i) == idx {
			return r.err == nil && params == 0 && results == 0, r.err
		}
	}
	return false, r.err
}

func (r *reader) skipValTypes() int {
	n := r.count(1)
	for i := 0; i < n && r.err == nil; i++ {
		r.valType()
	}
	return n
}

// sectionCount reads the leading vector length of a section, or 0 when the
// section is absent. It also returns where the items start.
func (m *module) sectionCount(id int) (n uint32, itemsStart int, err error) {
	r, ok := m.payload(id)
	if !ok {
		return 0, 0, nil
	}
	n = r.u32()
	return n, r.p, r.err
}

// globals returns the number of defined globals and where they start. It
// walks every definition: the countdown is appended after the last one, so a
// section with stray bytes must be refused rather than extended.
func (m *module) globals() (n uint32, itemsStart int, err error) {
	r, ok := m.payload(secGlobal)
	if !ok {
		return 0, 0, nil
	}
	count := r.count(3)
	itemsStart = r.p
	for i := 0; i < count && r.err == nil; i++ {
		r.valType()
		r.byte() // mutability
		if err := r.expr(nil); err != nil {
			return 0, 0, err
		}
	}
	if r.err == nil && r.remaining() != 0 {
		r.failf("trailing bytes in global section")
	}
	return uint32(count), itemsStart, r.err
}

// checkExportFree fails if name is already exported: duplicate export names
// are invalid, and it also catches instrumenting a module twice.
func (m *module) checkExportFree(name string) error {
	r, ok := m.payload(secExport)
	if !ok {
		return nil
	}
	n := r.count(3)
	for i := 0; i < n && r.err == nil; i++ {
		field := r.name()
		r.byte() // kind
		r.u32()  // index
		if r.err == nil && string(field) == name {
			return fmt.Errorf("%w: %q", ErrExportExists, name)
		}
	}
	// The new export is appended after the existing ones, so stray bytes
	// there would swallow it.
	if r.err == nil && r.remaining() != 0 {
		r.failf("trailing bytes in export section")
	}
	return r.err
}
