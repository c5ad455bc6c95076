package main

import (
	"bytes"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/eryx-dev/eryx/kvstate"
)

// snapshotKeyFile is the generated key's file under ERYX_DATA_DIR.
const snapshotKeyFile = "snapshot.key"

// snapshotKey returns the key session snapshots are tagged with:
// ERYX_SNAPSHOT_KEY, else the contents of ERYX_SNAPSHOT_KEY_FILE, else a
// random key generated once and kept in ERYX_DATA_DIR. The generated key
// suits one worker (the embedded server's): workers that share sessions
// must share the key, or each refuses the others' snapshots
// (session_tampered), hence the warning.
func snapshotKey(cfg Config, log *slog.Logger) ([]byte, error) {
	switch {
	case cfg.SnapshotKey != "":
		return checkKey("ERYX_SNAPSHOT_KEY", []byte(cfg.SnapshotKey))
	case cfg.SnapshotKeyFile != "":
		data, err := os.ReadFile(cfg.SnapshotKeyFile)
		if err != nil {
			return nil, fmt.Errorf("ERYX_SNAPSHOT_KEY_FILE: %w", err)
		}
		return checkKey("ERYX_SNAPSHOT_KEY_FILE", bytes.TrimSpace(data))
	}
	dir, err := filepath.Abs(cfg.DataDir)
	if err != nil {
		return nil, err
	}
	path := filepath.Join(dir, snapshotKeyFile)
	key, created, err := kvstate.KeyFile(path)
	if err != nil {
		return nil, err
	}
	verb := "session snapshots are tagged with the key generated in the data directory"
	if created {
		verb = "generated a session snapshot key in the data directory"
	}
	log.Warn(verb+": workers sharing sessions must share one key (set ERYX_SNAPSHOT_KEY or ERYX_SNAPSHOT_KEY_FILE)", "file", path)
	return key, nil
}

func checkKey(source string, key []byte) ([]byte, error) { return kvstate.CheckKey(source, key) }
