package assets_test

import (
	"errors"
	"io/fs"
	"testing"

	"github.com/eryx-dev/eryx/internal/check"
	"github.com/eryx-dev/eryx/runtime/assets"
)

func TestLoadImage(t *testing.T) {
	tests := []struct {
		image    string
		archives []string // the guest sees these under /lib
		hidden   []string // and not these
	}{
		{"", []string{assets.StdlibName}, []string{assets.NumpyName, "eryx.wasm", "README.md"}},
		{assets.ImageMinimal, []string{assets.StdlibName}, []string{assets.NumpyName, "eryx-numpy.wasm"}},
		{assets.ImageNumpy, []string{assets.StdlibName, assets.NumpyName}, []string{"eryx-numpy.wasm", "eryx.wasm"}},
	}
	for _, tt := range tests {
		t.Run(tt.image, func(t *testing.T) {
			a, err := assets.LoadImage(tt.image)
			if errors.Is(err, assets.ErrNotBuilt) {
				check.Needs(t, err, "the runtime images (make runtime)")
			}
			if err != nil || len(a.Module) == 0 {
				t.Fatalf("LoadImage(%q): %v", tt.image, err)
			}
			for _, name := range tt.archives {
				if _, err := fs.Stat(a.Stdlib, name); err != nil {
					t.Errorf("%s: %v", name, err)
				}
			}
			for _, name := range tt.hidden {
				if _, err := a.Stdlib.Open(name); !errors.Is(err, fs.ErrNotExist) {
					t.Errorf("%s visible to the guest: %v", name, err)
				}
			}
		})
	}
	if _, err := assets.LoadImage("full"); !errors.Is(err, assets.ErrUnknownImage) {
		t.Fatalf("unknown image: %v", err)
	}
}
