package sandbox_test

import (
	"archive/tar"
	"archive/zip"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"testing"
	"testing/fstest"

	"github.com/eryx-dev/eryx/runtime/sandbox"
)

func buildZip(t *testing.T, files map[string]string) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for name, body := range files {
		w, err := zw.Create(name)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write([]byte(body)); err != nil {
			t.Fatal(err)
		}
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func buildTarGz(t *testing.T, files map[string]string) []byte {
	t.Helper()
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	for name, body := range files {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(body)), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte(body)); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := gz.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestPackagesAreImportable(t *testing.T) {
	t.Parallel()
	wheel, err := sandbox.NewPackage("greet-1.0-py3-none-any.whl", buildZip(t, map[string]string{
		"greet/__init__.py":                 "from .core import hello\n",
		"greet/core.py":                     "def hello(name):\n    return f'hello {name}'\n",
		"greet-1.0.dist-info/METADATA":      "Name: greet\n",
		"greet-1.0.dist-info/top_level.txt": "greet\n",
	}))
	if err != nil {
		t.Fatal(err)
	}
	sdist, err := sandbox.NewPackage("mathx-0.1.tar.gz", buildTarGz(t, map[string]string{
		"mathx-0.1/pyproject.toml":        "[project]\nname='mathx'\n",
		"mathx-0.1/src/mathx/__init__.py": "def triple(x):\n    return 3 * x\n",
	}))
	if err != nil {
		t.Fatal(err)
	}
	dir, err := sandbox.PackageFromFS("localdir", fstest.MapFS{
		"single.py":          {Data: []byte("VALUE = 7\n")},
		"nested/__init__.py": {Data: []byte("")},
		"nested/deep.py":     {Data: []byte("import json\ndef dump(x):\n    return json.dumps(x)\n")},
	})
	if err != nil {
		t.Fatal(err)
	}
	res := run(t, "from greet import hello\nimport mathx, single\nfrom nested.deep import dump\nresult = [hello('you'), mathx.triple(2), single.VALUE, dump([1])]",
		sandbox.ExecOptions{Packages: []*sandbox.Package{wheel, sdist, dir}})
	if res.Status != sandbox.StatusOK || string(res.Value) != `["hello you",6,7,"[1]"]` {
		t.Fatalf("status %s value %s error %+v", res.Status, res.Value, res.Error)
	}
	// Read-only, and not there for the next execution.
	res = run(t, "import os\nprint(os.listdir('/pkg'))\ntry:\n    with open(os.path.join('/pkg', os.listdir('/pkg')[0]), 'ab') as f:\n        f.write(b'x')\nexcept OSError:\n    print('read-only')", sandbox.ExecOptions{Packages: []*sandbox.Package{wheel}})
	if res.Stdout != "['"+wheel.File()[5:]+"']\nread-only\n" {
		t.Fatalf("stdout %q %+v", res.Stdout, res.Error)
	}
	res = run(t, "try:\n    import greet\nexcept ImportError:\n    print('absent')", sandbox.ExecOptions{})
	if res.Stdout != "absent\n" {
		t.Fatalf("stdout %q", res.Stdout)
	}
}

func TestBadPackages(t *testing.T) {
	t.Parallel()
	good := buildZip(t, map[string]string{"ok/__init__.py": ""})
	tests := []struct {
		name string
		data []byte
	}{
		{"garbage", []byte("definitely not an archive")},
		{"truncated zip", good[:len(good)/2]},
		{"truncated tar.gz", buildTarGz(t, map[string]string{"p-1/p/__init__.py": "x = 1\n"})[:20]},
		{"native extension", buildZip(t, map[string]string{"fast/__init__.py": "", "fast/_speedups.cpython-311-x86_64-linux-gnu.so": "\x7fELF"})},
		{"no python", buildZip(t, map[string]string{"README.txt": "hi"})},
		{"path escape", buildZip(t, map[string]string{"../../evil.py": "x = 1"})},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if _, err := sandbox.NewPackage(tt.name, tt.data); !errors.Is(err, sandbox.ErrBadPackage) {
				t.Fatalf("err = %v, want ErrBadPackage", err)
			}
		})
	}
}

// A session whose state holds objects of a package restores elsewhere when
// given the package.
func TestSessionWithPackageState(t *testing.T) {
	t.Parallel()
	pkg, err := sandbox.NewPackage("shapes.whl", buildZip(t, map[string]string{
		"shapes/__init__.py": "class Square:\n    def __init__(self, s):\n        self.s = s\n    def area(self):\n        return self.s ** 2\n",
	}))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	a := newSandbox(t, engine)
	if res, err := a.Execute(ctx, "import shapes\nsq = shapes.Square(4)", sandbox.ExecOptions{Session: true, Packages: []*sandbox.Package{pkg}}); err != nil || res.Status != sandbox.StatusOK {
		t.Fatalf("%v %+v", err, res.Error)
	}
	snap, err := a.SnapshotState(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	b := newSandbox(t, engine)
	if skipped, err := b.RestoreState(ctx, snap.Data, pkg); err != nil || len(skipped) > 0 {
		t.Fatalf("%v %+v", err, skipped)
	}
	res, err := b.Execute(ctx, "print(sq.area(), shapes.Square(2).area())", sandbox.ExecOptions{Session: true, Packages: []*sandbox.Package{pkg}})
	if err != nil || res.Stdout != "16 4\n" {
		t.Fatalf("%v %q %+v", err, res.Stdout, res.Error)
	}
}
