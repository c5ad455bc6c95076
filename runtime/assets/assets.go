// Package assets embeds the sandbox's build outputs: the CPython reactor
// module and the standard library it imports from.
//
// Both are produced by `make runtime` into dist/ and are not checked in, so
// a fresh clone compiles but reports ErrNotBuilt until the runtime is built.
package assets

import (
	"embed"
	"errors"
	"fmt"
	"io/fs"
)

// ErrNotBuilt means the runtime build outputs are missing from this binary.
var ErrNotBuilt = errors.New("eryx runtime assets are not built into this binary: run `make runtime`, then rebuild")

const (
	moduleFile = "dist/eryx.wasm"
	stdlibFile = "dist/python311.zip"
	// StdlibName is the file name under which the guest finds its stdlib.
	StdlibName = "python311.zip"
)

// dist holds whatever make runtime produced; the committed README.md keeps
// the pattern matching on a fresh clone.
//
//go:embed dist
var dist embed.FS

// Assets are the embedded build outputs.
type Assets struct {
	// Module is the wasm binary of CPython and the guest glue.
	Module []byte
	// Stdlib is a read-only file system holding StdlibName at its root.
	Stdlib fs.FS
}

// Load returns the embedded assets, or an error wrapping ErrNotBuilt.
func Load() (Assets, error) {
	mod, err := dist.ReadFile(moduleFile)
	if err != nil {
		return Assets{}, fmt.Errorf("%w (%s missing)", ErrNotBuilt, moduleFile)
	}
	if _, err := fs.Stat(dist, stdlibFile); err != nil {
		return Assets{}, fmt.Errorf("%w (%s missing)", ErrNotBuilt, stdlibFile)
	}
	sub, err := fs.Sub(dist, "dist")
	if err != nil {
		return Assets{}, fmt.Errorf("assets: %w", err)
	}
	return Assets{Module: mod, Stdlib: stdlibOnly{sub}}, nil
}

// stdlibOnly exposes only the stdlib archive to the guest, not the module
// binary or the README that share its directory.
type stdlibOnly struct{ fsys fs.FS }

func (s stdlibOnly) Open(name string) (fs.File, error) {
	if name != "." && name != StdlibName {
		return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrNotExist}
	}
	return s.fsys.Open(name)
}
