package preempt

import (
	"bytes"
	"fmt"
)

// counterGlobalDef is the appended countdown global: (mut i32) initialised by
// i32.const 0, so the first check calls the hook.
var counterGlobalDef = []byte{0x7f, 0x01, 0x41, 0x00, 0x0b}

// debugPrefix names DWARF custom sections. They address code by byte offset,
// which the inserted checks invalidate, and stale DWARF is worse than none.
var debugPrefix = []byte(".debug_")

// checkSequence encodes the countdown check:
//
//	global.get $c ; i32.const 1 ; i32.sub ; global.set $c
//	global.get $c ; i32.const 0 ; i32.le_s
//	if ; call $hook ; end
func checkSequence(counter, hook uint32) []byte {
	b := make([]byte, 0, 32)
	b = append(b, 0x23)
	b = appendU32(b, counter)
	b = append(b, 0x41, 0x01, 0x6b, 0x24)
	b = appendU32(b, counter)
	b = append(b, 0x23)
	b = appendU32(b, counter)
	b = append(b, 0x41, 0x00, 0x4c, 0x04, 0x40, 0x10)
	b = appendU32(b, hook)
	return append(b, 0x0b)
}

// outSection is one section of the output. Code is written straight from the
// scan (payload nil) so the largest section is copied exactly once.
type outSection struct {
	id      byte
	payload []byte
	size    int
}

func (m *module) rewrite(hook hookInfo, opts Options) ([]byte, Stats, error) {
	return m.rewriteWith(hook, opts, func(counter uint32) []byte { return checkSequence(counter, hook.index) })
}

// rewriteWith is rewrite with the inserted sequence built by makeCheck from
// the countdown global's index. Tests use it to validate large modules that
// lack a hook.
func (m *module) rewriteWith(hook hookInfo, opts Options, makeCheck func(counter uint32) []byte) ([]byte, Stats, error) {
	definedGlobals, globalItems, err := m.globals()
	if err != nil {
		return nil, Stats{}, err
	}
	exports, exportItems, err := m.sectionCount(secExport)
	if err != nil {
		return nil, Stats{}, err
	}
	cs, err := m.scanCode(opts.FunctionEntry)
	if err != nil {
		return nil, Stats{}, err
	}
	if funcs, _, err := m.sectionCount(secFunction); err != nil {
		return nil, Stats{}, err
	} else if funcs != cs.count {
		return nil, Stats{}, fmt.Errorf("%w: %d functions declared but %d bodies in the code section", ErrMalformed, funcs, cs.count)
	}

	// Globals are indexed imports first, then definitions; the countdown is
	// the new last definition.
	counter := uint32(hook.importedGlobals) + definedGlobals
	check := makeCheck(counter)
	plan := m.plan(
		m.globalSection(definedGlobals, globalItems),
		m.exportSection(exports, exportItems, opts.FlagExport, counter),
		outSection{id: secCode, size: cs.size(len(check))},
	)
	out := m.emit(plan, &cs, check)
	st := Stats{
		Functions: len(cs.bodies),
		Loops:     cs.loops,
		Checks:    len(cs.points),
		FlagIndex: counter,
		HookIndex: hook.index,
	}
	return out, st, nil
}

// globalSection is the global section with the countdown appended.
func (m *module) globalSection(count uint32, itemsStart int) outSection {
	b := appendU32(nil, count+1)
	b = append(b, m.itemsOf(secGlobal, itemsStart)...)
	b = append(b, counterGlobalDef...)
	return outSection{id: secGlobal, payload: b, size: len(b)}
}

// exportSection is the export section with the countdown's export appended.
func (m *module) exportSection(count uint32, itemsStart int, name string, counter uint32) outSection {
	b := appendU32(nil, count+1)
	b = append(b, m.itemsOf(secExport, itemsStart)...)
	b = appendU32(b, uint32(len(name)))
	b = append(b, name...)
	b = append(b, kindGlobal)
	b = appendU32(b, counter)
	return outSection{id: secExport, payload: b, size: len(b)}
}

// emit writes the output binary into one buffer sized exactly up front.
func (m *module) emit(plan []outSection, cs *codeScan, check []byte) []byte {
	out := make([]byte, 0, outputSize(plan))
	out = append(out, m.wasm[:headerSize]...)
	for _, s := range plan {
		out = append(out, s.id)
		out = appendU32(out, uint32(s.size))
		if s.id == secCode {
			out = cs.write(out, m.wasm, check)
		} else {
			out = append(out, s.payload...)
		}
	}
	return out
}

// itemsOf returns the section's bytes after its leading count, or nil when
// the section is absent.
func (m *module) itemsOf(id, itemsStart int) []byte {
	i := m.index[id]
	if i < 0 {
		return nil
	}
	return m.wasm[itemsStart:m.sections[i].end]
}

// plan lists the output sections in order: the input's, with global, export
// and code replaced by the given ones and .debug_* dropped. A global or
// export section the input lacks goes just before the first section that
// must follow it.
func (m *module) plan(global, export, code outSection) []outSection {
	plan := make([]outSection, 0, len(m.sections)+2)
	pendingGlobal := m.index[secGlobal] < 0
	pendingExport := m.index[secExport] < 0
	for _, s := range m.sections {
		if s.id == secCustom {
			if !bytes.HasPrefix(s.name, debugPrefix) {
				plan = append(plan, m.raw(s))
			}
			continue
		}
		if pendingGlobal && sectionRank[s.id] > sectionRank[secGlobal] {
			plan, pendingGlobal = append(plan, global), false
		}
		if pendingExport && sectionRank[s.id] > sectionRank[secExport] {
			plan, pendingExport = append(plan, export), false
		}
		switch s.id {
		case secGlobal:
			plan = append(plan, global)
		case secExport:
			plan = append(plan, export)
		case secCode:
			plan = append(plan, code)
		default:
			plan = append(plan, m.raw(s))
		}
	}
	if pendingGlobal {
		plan = append(plan, global)
	}
	if pendingExport {
		plan = append(plan, export)
	}
	return plan
}

func (m *module) raw(s section) outSection {
	return outSection{id: s.id, payload: m.wasm[s.start:s.end], size: s.end - s.start}
}

func outputSize(plan []outSection) int {
	n := headerSize
	for _, s := range plan {
		n += 1 + sizeU32(uint32(s.size)) + s.size
	}
	return n
}

// newSize is the size of body b after inserting its checks.
func (b body) newSize(checkLen int) int {
	return b.end - b.start + b.checks*checkLen
}

// size is the payload size of the rewritten code section.
func (cs *codeScan) size(checkLen int) int {
	n := sizeU32(cs.count)
	for _, b := range cs.bodies {
		sz := b.newSize(checkLen)
		n += sizeU32(uint32(sz)) + sz
	}
	return n
}

// write appends the rewritten code section payload: each body with its size
// re-encoded and the check spliced in at every recorded point.
func (cs *codeScan) write(out, wasm, check []byte) []byte {
	out = appendU32(out, cs.count)
	points := cs.points
	for _, b := range cs.bodies {
		out = appendU32(out, uint32(b.newSize(len(check))))
		p := b.start
		for _, at := range points[:b.checks] {
			out = append(out, wasm[p:at]...)
			out = append(out, check...)
			p = at
		}
		out = append(out, wasm[p:b.end]...)
		points = points[b.checks:]
	}
	return out
}
