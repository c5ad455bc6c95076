package main

import (
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestSnapshotKey(t *testing.T) {
	long := strings.Repeat("k", 40)
	dir := t.TempDir()
	file := filepath.Join(dir, "key")
	if err := os.WriteFile(file, []byte(long+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.DiscardHandler)
	tests := []struct {
		name string
		cfg  Config
		want string // "" : generated
		err  string
	}{
		{"env", Config{SnapshotKey: long}, long, ""},
		{"env wins over the file", Config{SnapshotKey: long + "x", SnapshotKeyFile: file}, long + "x", ""},
		{"file, trimmed", Config{SnapshotKeyFile: file}, long, ""},
		{"too short", Config{SnapshotKey: "short"}, "", "at least 32"},
		{"missing file", Config{SnapshotKeyFile: filepath.Join(dir, "nope")}, "", "ERYX_SNAPSHOT_KEY_FILE"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			key, err := snapshotKey(tt.cfg, log)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("err %v, want %q", err, tt.err)
				}
				return
			}
			if err != nil || string(key) != tt.want {
				t.Fatalf("key %q, %v", key, err)
			}
		})
	}
	// Neither set: generated once in the data directory, then reused.
	data := filepath.Join(dir, "data")
	first, err := snapshotKey(Config{DataDir: data}, log)
	if err != nil || len(first) < 32 {
		t.Fatalf("generated %q, %v", first, err)
	}
	st, err := os.Stat(filepath.Join(data, snapshotKeyFile))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v %v", st, err)
	}
	again, err := snapshotKey(Config{DataDir: data}, log)
	if err != nil || string(again) != string(first) {
		t.Fatalf("second start got another key: %q vs %q (%v)", again, first, err)
	}
}
