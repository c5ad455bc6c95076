// Package assets embeds the sandbox's build outputs: the CPython reactor
// modules (runtime images) and the archives they import from.
//
// They are produced by `make runtime` into dist/ and are not checked in, so
// a fresh clone compiles but reports ErrNotBuilt until the runtime is built.
package assets

import (
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"slices"
)

// ErrNotBuilt means the runtime build outputs are missing from this binary.
var ErrNotBuilt = errors.New("eryx runtime assets are not built into this binary: run `make runtime`, then rebuild")

// ErrUnknownImage means an image name that no build produces.
var ErrUnknownImage = errors.New("assets: unknown runtime image")

// Runtime images: the same interpreter, with or without numpy linked in.
const (
	// ImageMinimal is CPython, its stdlib and the guest runtime.
	ImageMinimal = "minimal"
	// ImageNumpy adds numpy's extension modules (built in, pre-imported)
	// and numpy.zip, its Python part.
	ImageNumpy = "numpy"
)

const (
	// StdlibName is the file name under which the guest finds its stdlib.
	StdlibName = "python311.zip"
	// NumpyName is the archive of numpy's Python part in the numpy image.
	NumpyName = "numpy.zip"
)

// images maps an image to its module and the archives the guest sees at /lib.
var images = map[string]struct {
	module   string
	archives []string
}{
	ImageMinimal: {"eryx.wasm", []string{StdlibName}},
	ImageNumpy:   {"eryx-numpy.wasm", []string{StdlibName, NumpyName}},
}

// dist holds whatever make runtime produced; the committed README.md keeps
// the pattern matching on a fresh clone.
//
//go:embed dist
var dist embed.FS

// Assets are the embedded build outputs of one image.
type Assets struct {
	// Image is the image's name (ImageMinimal, ImageNumpy).
	Image string
	// Module is the wasm binary of CPython and the guest glue.
	Module []byte
	// Stdlib is a read-only file system holding StdlibName (and for the
	// numpy image NumpyName) at its root.
	Stdlib fs.FS
}

// Load returns the minimal image, or an error wrapping ErrNotBuilt.
func Load() (Assets, error) { return LoadImage(ImageMinimal) }

// LoadImage returns the named image ("" is ImageMinimal), or an error
// wrapping ErrNotBuilt or ErrUnknownImage.
func LoadImage(name string) (Assets, error) {
	if name == "" {
		name = ImageMinimal
	}
	img, ok := images[name]
	if !ok {
		return Assets{}, fmt.Errorf("%w %q (known: %s, %s)", ErrUnknownImage, name, ImageMinimal, ImageNumpy)
	}
	mod, err := dist.ReadFile("dist/" + img.module)
	if err != nil {
		return Assets{}, fmt.Errorf("%w (image %s: dist/%s missing)", ErrNotBuilt, name, img.module)
	}
	for _, a := range img.archives {
		if _, err := fs.Stat(dist, "dist/"+a); err != nil {
			return Assets{}, fmt.Errorf("%w (image %s: dist/%s missing)", ErrNotBuilt, name, a)
		}
	}
	sub, err := fs.Sub(dist, "dist")
	if err != nil {
		return Assets{}, fmt.Errorf("assets: %w", err)
	}
	return Assets{Image: name, Module: mod, Stdlib: archivesOnly{sub, img.archives}}, nil
}

// archivesOnly exposes only the image's archives to the guest, not the
// module binaries or the README that share their directory.
type archivesOnly struct {
	fsys  fs.FS
	names []string
}

func (s archivesOnly) Open(name string) (fs.File, error) {
	if name != "." && !slices.Contains(s.names, name) {
		return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrNotExist}
	}
	return s.fsys.Open(name)
}
