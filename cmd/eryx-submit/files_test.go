package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// --file uploads (once: content-addressed) and mounts, --out downloads
// the outputs byte for byte, and the files subcommands see both.
func TestFilesInAndOut(t *testing.T) {
	url := platform(t)
	dir := t.TempDir()
	csv := filepath.Join(dir, "sales.csv")
	if err := os.WriteFile(csv, []byte("region,amount\nnorth,3\nsouth,4\nnorth,2\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	code := `import csv, collections
t = collections.Counter()
for row in csv.DictReader(open('/data/in/sales.csv')):
    t[row['region']] += int(row['amount'])
open('/output/summary.csv', 'w').write(''.join(f'{k},{v}\n' for k, v in sorted(t.items())))
print(sum(t.values()))`
	out := filepath.Join(dir, "out")
	inv := submit(t, url, "", "--id", "files-1", "--file", csv+":in/sales.csv", "--out", out, "-c", code)
	if inv.code != 0 || inv.stdout != "9\n" || !strings.Contains(inv.stderr, "1 output file(s) in "+out) {
		t.Fatalf("run: %+v", inv)
	}
	got, err := os.ReadFile(filepath.Join(out, "summary.csv"))
	if err != nil || string(got) != "north,5\nsouth,4\n" {
		t.Fatalf("summary: %q %v", got, err)
	}

	ls := submit(t, url, "", "files", "ls")
	if ls.code != 0 || strings.Count(ls.stdout, "sha256-") != 1 || !strings.Contains(ls.stdout, "files-1/summary.csv") {
		t.Fatalf("ls: %+v", ls)
	}
	// The same input again is not uploaded twice.
	if inv := submit(t, url, "", "--file", csv, "-c", "print(open('/data/sales.csv').read().count('north'))"); inv.code != 0 || inv.stdout != "2\n" {
		t.Fatalf("second run: %+v", inv)
	}
	if ls := submit(t, url, "", "files", "ls", "sha256-"); strings.Count(ls.stdout, "sha256-") != 1 {
		t.Fatalf("uploaded twice: %s", ls.stdout)
	}

	if inv := submit(t, url, "", "files", "put", csv, "named.csv"); inv.code != 0 {
		t.Fatalf("put: %+v", inv)
	}
	get := submit(t, url, "", "files", "get", "files-1/summary.csv")
	if get.code != 0 || get.stdout != "north,5\nsouth,4\n" {
		t.Fatalf("get: %+v", get)
	}
	if inv := submit(t, url, "", "files", "rm", "named.csv"); inv.code != 0 {
		t.Fatalf("rm: %+v", inv)
	}
	if inv := submit(t, url, "", "files", "get", "named.csv"); inv.code != 2 || !strings.Contains(inv.stderr, "no such file") {
		t.Fatalf("get after rm: %+v", inv)
	}
}

// Bad --file specs and a missing input are refused clearly.
func TestFilesRefusals(t *testing.T) {
	url := platform(t)
	local := filepath.Join(t.TempDir(), "x.txt")
	if err := os.WriteFile(local, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		args   []string
		code   int
		stderr string
	}{
		{"escaping guest path", []string{"--file", local + ":../etc/passwd", "-c", "pass"}, 2, "not a clean relative path"},
		{"empty guest path", []string{"--file", local + ":", "-c", "pass"}, 2, "empty PATH"},
		{"missing local", []string{"--file", local + ".nope", "-c", "pass"}, 2, "no such file"},
		{"bad name", []string{"files", "get", "../x"}, 2, "not a clean relative path"},
		{"missing object", []string{"files", "get", "nope"}, 2, "no such file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			inv := submit(t, url, "", tt.args...)
			if inv.code != tt.code || !strings.Contains(inv.stderr, tt.stderr) {
				t.Fatalf("%+v, want exit %d and %q", inv, tt.code, tt.stderr)
			}
		})
	}
}

// The example job of the README runs as documented.
func TestFilesExample(t *testing.T) {
	url := platform(t)
	out := filepath.Join(t.TempDir(), "results")
	inv := submit(t, url, "", "--file", "../../examples/jobs/sales.csv", "--out", out, "../../examples/jobs/files_csv.py")
	if inv.code != 0 || inv.stdout != "6 sales in 3 regions, total 365.74\n" {
		t.Fatalf("%+v", inv)
	}
	got, err := os.ReadFile(filepath.Join(out, "summary.csv"))
	want := "region,sales,total,average\neast,1,99.99,99.99\nnorth,3,170.00,56.67\nsouth,2,95.75,47.88\n"
	if err != nil || string(got) != want {
		t.Fatalf("summary.csv %q %v, want %q", got, err, want)
	}
}
