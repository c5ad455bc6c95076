package preempt

import (
	"reflect"
	"testing"
)

func TestInspect(t *testing.T) {
	void := []testFuncType{{}}
	table := [][]byte{ins(tFuncRef, 0x00, uleb(1))}
	mutI32 := ins(tI32, 0x01, i32c(0), opEnd)
	constI32 := ins(tI32, 0x00, i32c(0), opEnd)
	body := func(code ...any) []testFunc { return []testFunc{{typ: 0, code: ins(append(code, opEnd)...)}} }
	tests := []struct {
		name string
		m    testModule
		want Shape
	}{
		{"globals: mutable exported, mutable hidden, constant", testModule{
			types: void, funcs: body(), globals: [][]byte{mutI32, mutI32, constI32},
			exports: []testExport{{"sp", kindGlobal, 0}, {"k", kindGlobal, 2}},
		}, Shape{MutableGlobals: []Global{{0, "sp"}, {1, ""}}}},
		{"imported globals shift the indices", testModule{
			types: void,
			imports: []testImport{
				{"env", "g", kindGlobal, []byte{tI32, 0x01}},
				{"env", "c", kindGlobal, []byte{tI32, 0x00}},
			},
			funcs: body(), globals: [][]byte{mutI32}, exports: []testExport{{"mine", kindGlobal, 2}},
		}, Shape{MutableGlobals: []Global{{2, "mine"}}, ImportedMutableGlobals: 1}},
		{"table.set", testModule{types: void, tables: table, funcs: body(opRefNull, tFuncRef, i32c(0), opRefNull, tFuncRef, 0x26, 0x00, opDrop)},
			Shape{TableWrites: 1}},
		{"table.grow, table.fill, table.copy, table.init, elem.drop; table.size and table.get are reads", testModule{
			types: void, tables: table, funcs: body(
				opRefNull, tFuncRef, i32c(1), fc(15, 0x00), opDrop, // table.grow
				i32c(0), opRefNull, tFuncRef, i32c(0), fc(17, 0x00), // table.fill
				i32c(0), i32c(0), i32c(0), fc(14, 0x00, 0x00), // table.copy
				i32c(0), i32c(0), i32c(0), fc(12, 0x00, 0x00), // table.init
				fc(13, 0x00),         // elem.drop
				fc(16, 0x00), opDrop, // table.size
				i32c(0), opTableGet, 0x00, opDrop,
			)}, Shape{TableWrites: 5}},
		{"memory.init and data.drop", testModule{types: void, memory: []byte{0x00, 0x01}, funcs: body(
			i32c(0), i32c(0), i32c(0), fc(8, 0x00, 0x00), fc(9, 0x00))}, Shape{DataOps: 2}},
		{"exported and imported tables", testModule{
			types: void, imports: []testImport{{"env", "t", kindTable, []byte{tFuncRef, 0x00, 0x00}}},
			tables: table, funcs: body(), exports: []testExport{{"t", kindTable, 1}},
		}, Shape{ExportedTables: 1, ImportedTables: 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Inspect(tt.m.encode())
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
		})
	}
	if _, err := Inspect([]byte("nope")); err == nil {
		t.Fatal("Inspect accepted garbage")
	}
}

// The countdown Instrument adds is a mutable global, exported under its
// name: a host resetting instances finds it like any other.
func TestInspectSeesTheCountdown(t *testing.T) {
	m := testModule{
		types:   []testFuncType{{}},
		imports: []testImport{hookImport(0)},
		funcs:   []testFunc{{typ: 0, code: ins(opLoop, tEmpty, opEnd, opEnd)}},
	}
	out, err := Instrument(m.encode(), Options{HookModule: "eryx", HookName: "preempt", FlagExport: "cd"})
	if err != nil {
		t.Fatal(err)
	}
	got, err := Inspect(out)
	if err != nil {
		t.Fatal(err)
	}
	if want := []Global{{0, "cd"}}; !reflect.DeepEqual(got.MutableGlobals, want) {
		t.Fatalf("globals %+v, want %+v", got.MutableGlobals, want)
	}
}
