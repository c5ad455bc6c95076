package preempt

// Shape is what a host needs to know about a module to return one of its
// instances to an earlier state in place: which state the guest can change
// besides linear memory, and whether all of it can be reached from outside.
type Shape struct {
	// MutableGlobals are the module's own mutable globals.
	MutableGlobals []Global
	// ImportedMutableGlobals counts mutable globals the module imports
	// (state shared with another module).
	ImportedMutableGlobals int
	// TableWrites counts instructions that change a table (table.set,
	// table.grow, table.fill, table.copy, table.init, elem.drop). Without
	// them the tables hold what instantiation put there, for ever.
	TableWrites int
	// DataOps counts memory.init and data.drop instructions.
	DataOps int
	// ExportedTables and ImportedTables count tables reachable from outside
	// the instance (a host could change those).
	ExportedTables, ImportedTables int
}

// Global is one defined global.
type Global struct {
	Index  uint32 // in the global index space (imports first)
	Export string // its first export name, "" if not exported
}

// Inspect reports the module's Shape.
func Inspect(wasm []byte) (Shape, error) {
	var sh Shape
	m, err := parseModule(wasm)
	if err != nil {
		return sh, err
	}
	importedGlobals, err := m.inspectImports(&sh)
	if err != nil {
		return sh, err
	}
	if err := m.inspectGlobals(&sh, importedGlobals); err != nil {
		return sh, err
	}
	if err := m.inspectExports(&sh); err != nil {
		return sh, err
	}
	cs, err := m.scanCode(false)
	if err != nil {
		return sh, err
	}
	sh.TableWrites, sh.DataOps = cs.tableWrites, cs.dataOps
	return sh, nil
}

func (m *module) inspectImports(sh *Shape) (globals int, err error) {
	r, ok := m.payload(secImport)
	if !ok {
		return 0, nil
	}
	n := r.count(4)
	for i := 0; i < n && r.err == nil; i++ {
		r.name()
		r.name()
		switch kind := r.byte(); kind {
		case kindFunc:
			r.u32()
		case kindTable:
			r.valType()
			r.limits()
			sh.ImportedTables++
		case kindMemory:
			r.limits()
		case kindGlobal:
			r.valType()
			if r.byte() == 1 {
				sh.ImportedMutableGlobals++
			}
			globals++
		case kindTag:
			r.byte()
			r.u32()
		default:
			r.failf("unknown import kind %d", kind)
		}
	}
	return globals, r.err
}

func (m *module) inspectGlobals(sh *Shape, imported int) error {
	r, ok := m.payload(secGlobal)
	if !ok {
		return nil
	}
	n := r.count(3)
	for i := 0; i < n && r.err == nil; i++ {
		r.valType()
		mut := r.byte()
		if err := r.expr(nil); err != nil {
			return err
		}
		if mut == 1 {
			sh.MutableGlobals = append(sh.MutableGlobals, Global{Index: uint32(imported + i)})
		}
	}
	return r.err
}

func (m *module) inspectExports(sh *Shape) error {
	r, ok := m.payload(secExport)
	if !ok {
		return nil
	}
	n := r.count(3)
	for i := 0; i < n && r.err == nil; i++ {
		name := r.name()
		kind := r.byte()
		idx := r.u32()
		switch kind {
		case kindTable:
			sh.ExportedTables++
		case kindGlobal:
			for j := range sh.MutableGlobals {
				if g := &sh.MutableGlobals[j]; g.Index == idx && g.Export == "" {
					g.Export = string(name)
				}
			}
		}
	}
	return r.err
}
