package main

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
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
	data, err := os.ReadFile(path)
	switch {
	case err == nil:
		log.Warn("session snapshots are tagged with the key generated in the data directory: "+
			"workers sharing sessions must share one key (set ERYX_SNAPSHOT_KEY or ERYX_SNAPSHOT_KEY_FILE)", "file", path)
		return checkKey(path, bytes.TrimSpace(data))
	case !errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("snapshot key: %w", err)
	}
	raw := make([]byte, kvstate.MinMACKeyBytes)
	if _, err := rand.Read(raw); err != nil {
		return nil, err
	}
	key := []byte(hex.EncodeToString(raw))
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("snapshot key: %w", err)
	}
	// O_EXCL: of two workers starting on one data directory, both end up
	// with the key of the one that wrote it first.
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return snapshotKey(cfg, log)
	}
	if err != nil {
		return nil, fmt.Errorf("snapshot key: %w", err)
	}
	if _, err := f.Write(append(key, '\n')); err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("snapshot key: %w", err)
	}
	if err := f.Close(); err != nil {
		return nil, fmt.Errorf("snapshot key: %w", err)
	}
	log.Warn("generated a session snapshot key in the data directory: "+
		"workers sharing sessions must share one key (set ERYX_SNAPSHOT_KEY or ERYX_SNAPSHOT_KEY_FILE)", "file", path)
	return key, nil
}

func checkKey(source string, key []byte) ([]byte, error) {
	if len(key) < kvstate.MinMACKeyBytes {
		return nil, fmt.Errorf("%s: the snapshot key has %d bytes, at least %d are needed (e.g. `openssl rand -hex 32`)",
			source, len(key), kvstate.MinMACKeyBytes)
	}
	return key, nil
}
