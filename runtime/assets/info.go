package assets

import (
	"archive/zip"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
)

// infoEntry is written into the stdlib archive by runtime/build/pack-stdlib.py.
const infoEntry = "eryx-runtime.json"

// Info says what the embedded runtime was built from. The guest sees the same
// record as eryx.runtime_info().
type Info struct {
	// Python is the CPython version, e.g. "3.11.2".
	Python string `json:"python"`
	// DebianSources maps each Debian source package built for wasm32-wasi
	// to its exact version.
	DebianSources map[string]string `json:"debian_sources"`
	// DebianPackages maps each Debian binary package whose files are in the
	// stdlib archive (dill, tzdata, python3.11's security update) to its version.
	DebianPackages map[string]string `json:"debian_packages"`
	// SecurityFiles are the stdlib files taken from the security update
	// because its source package cannot be fetched (docs/runtime.md).
	SecurityFiles []string `json:"security_files"`
	// Tzdata is the version of the time-zone database.
	Tzdata string `json:"tzdata"`
	// Modules is the number of Python modules in the archive.
	Modules int `json:"modules"`
}

// RuntimeInfo reads Info from the embedded stdlib archive.
func RuntimeInfo() (Info, error) {
	raw, err := dist.ReadFile(stdlibPath)
	if err != nil {
		return Info{}, fmt.Errorf("%w (%s missing)", ErrNotBuilt, stdlibPath)
	}
	zr, err := zip.NewReader(bytes.NewReader(raw), int64(len(raw)))
	if err != nil {
		return Info{}, fmt.Errorf("assets: reading %s: %w", stdlibPath, err)
	}
	f, err := zr.Open(infoEntry)
	if err != nil {
		return Info{}, fmt.Errorf("assets: %s has no %s (built by an older pack-stdlib.py?): %w", stdlibPath, infoEntry, err)
	}
	defer func() { _ = f.Close() }()
	data, err := io.ReadAll(f)
	if err != nil {
		return Info{}, fmt.Errorf("assets: reading %s: %w", infoEntry, err)
	}
	var info Info
	if err := json.Unmarshal(data, &info); err != nil {
		return Info{}, fmt.Errorf("assets: decoding %s: %w", infoEntry, err)
	}
	return info, nil
}

// stdlibPath is the stdlib archive in the embedded file system.
const stdlibPath = "dist/" + StdlibName
