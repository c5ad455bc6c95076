package main

import (
	"bytes"
	"context"
	"io"
	"os"
	"strings"
	"testing"
)

// --version prints every pinned Debian version the runtime was built from.
func TestVersionPrintsPinnedDebianVersions(t *testing.T) {
	var out bytes.Buffer
	if code := run(context.Background(), []string{"--version"}, &out, io.Discard); code != 0 {
		t.Fatalf("exit %d", code)
	}
	if !strings.HasPrefix(out.String(), "eryx-worker: CPython 3.11.2 (wasm32-wasi)\n") {
		t.Errorf("first line: %q", out.String())
	}
	pins, err := os.ReadFile("../../runtime/build/debian-pins")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, line := range strings.Split(string(pins), "\n") {
		f := strings.Fields(line)
		if len(f) < 3 || strings.HasPrefix(f[0], "#") || f[0] == "test" {
			continue
		}
		kind := map[string]string{"source": "source", "binary": "package"}[f[0]]
		found := false
		for _, l := range strings.Split(out.String(), "\n") {
			if g := strings.Fields(l); len(g) == 4 && g[0] == "debian" && g[1] == kind && g[2] == f[1] && g[3] == f[2] {
				found = true
			}
		}
		if !found {
			t.Errorf("--version lacks %s %s %s:\n%s", kind, f[1], f[2], out.String())
		}
		n++
	}
	if n == 0 {
		t.Fatal("no pins read")
	}
}
