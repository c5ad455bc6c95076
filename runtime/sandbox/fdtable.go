package sandbox

import (
	"errors"
	"fmt"
	"math/bits"
	"reflect"

	"github.com/tetratelabs/wazero/api"
)

// errFDTable: wazero's file table is not shaped as this code expects (a
// wazero upgrade); in-place reset is then turned off at start-up.
var errFDTable = errors.New("sandbox: wazero's file table is not the expected shape")

// fdTable reaches the WASI file-descriptor table wazero keeps on the host
// side of an instance. Resetting linear memory makes the guest forget the
// files a job left open, but wazero would still hold them: the next job
// could read them by number. wazero has no public API for this table, so
// it is reached by reflection (exported fields and methods where it can,
// and only reads of unexported ones), checked when the engine starts: if
// the shape ever changes, slots are not reset in place but rebuilt.
type fdTable struct {
	closeFile reflect.Value // (*FSContext).CloseFile(fd int32) sys.Errno
	table     reflect.Value // FSContext.openedFiles (read only)
	// What was open right after instantiation: the standard streams and
	// the preopened directories.
	base    []uint64
	entries []fdEntry
}

type fdEntry struct {
	fd   int
	ptr  uintptr
	name string
}

// newFDTable records mod's table as it is now, the state reset returns to.
func newFDTable(mod api.Module) (ft *fdTable, err error) {
	defer func() {
		// reflect panics on a shape it does not expect.
		if r := recover(); r != nil {
			ft, err = nil, fmt.Errorf("%w: %v", errFDTable, r)
		}
	}()
	v := reflect.ValueOf(mod)
	if v.Kind() != reflect.Pointer || v.Elem().Kind() != reflect.Struct {
		return nil, fmt.Errorf("%w: module is a %T", errFDTable, mod)
	}
	sysCtx := v.Elem().FieldByName("Sys")
	if !sysCtx.IsValid() || sysCtx.IsNil() {
		return nil, fmt.Errorf("%w: no Sys context", errFDTable)
	}
	fsc := sysCtx.MethodByName("FS").Call(nil)[0]
	ft = &fdTable{
		closeFile: fsc.MethodByName("CloseFile"),
		table:     fsc.Elem().FieldByName("openedFiles"),
	}
	if !ft.closeFile.IsValid() || ft.closeFile.Type().NumIn() != 1 || ft.closeFile.Type().In(0).Kind() != reflect.Int32 ||
		!ft.table.IsValid() || ft.masks().Kind() != reflect.Slice || ft.items().Kind() != reflect.Slice {
		return nil, fmt.Errorf("%w: FSContext", errFDTable)
	}
	masks, items := ft.masks(), ft.items()
	for w := range masks.Len() {
		m := masks.Index(w).Uint()
		ft.base = append(ft.base, m)
		for ; m != 0; m &= m - 1 {
			fd := w*64 + bits.TrailingZeros64(m)
			it := items.Index(fd)
			if it.Kind() != reflect.Pointer || !it.Elem().FieldByName("direntCache").IsValid() {
				return nil, fmt.Errorf("%w: file entry", errFDTable)
			}
			ft.entries = append(ft.entries, fdEntry{fd: fd, ptr: it.Pointer(), name: it.Elem().FieldByName("Name").String()})
		}
	}
	if len(ft.entries) < 3 {
		return nil, fmt.Errorf("%w: %d open files at start", errFDTable, len(ft.entries))
	}
	return ft, nil
}

func (ft *fdTable) masks() reflect.Value { return ft.table.FieldByName("masks") }
func (ft *fdTable) items() reflect.Value { return ft.table.FieldByName("items") }

// reset closes every file opened since newFDTable and checks that the
// files open then are still there, untouched. An error means the table
// cannot be brought back (the guest closed or replaced a preopen, or read a
// preopened directory, which leaves a listing cached): the slot must go.
func (ft *fdTable) reset() (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: %v", errFDTable, r)
		}
	}()
	masks := ft.masks()
	for w := range masks.Len() {
		m := masks.Index(w).Uint()
		var base uint64
		if w < len(ft.base) {
			base = ft.base[w]
		}
		if m&base != base {
			return fmt.Errorf("sandbox: reset: a file open at start was closed (fds %#x of %#x at %d)", m&base, base, w*64)
		}
		for extra := m &^ base; extra != 0; extra &= extra - 1 {
			fd := int32(w*64 + bits.TrailingZeros64(extra))
			if errno := ft.closeFile.Call([]reflect.Value{reflect.ValueOf(fd)})[0]; !errno.IsZero() {
				return fmt.Errorf("sandbox: reset: closing fd %d left open by the job: %v", fd, errno.Interface())
			}
		}
	}
	items := ft.items()
	for _, e := range ft.entries {
		it := items.Index(e.fd)
		switch {
		case it.Pointer() != e.ptr || it.Elem().FieldByName("Name").String() != e.name:
			return fmt.Errorf("sandbox: reset: fd %d (%s) was replaced", e.fd, e.name)
		case !it.Elem().FieldByName("direntCache").IsNil():
			return fmt.Errorf("sandbox: reset: the listing of fd %d (%s) is cached", e.fd, e.name)
		}
	}
	return nil
}
