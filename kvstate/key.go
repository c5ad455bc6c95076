package kvstate

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// KeyFile returns the snapshot key kept in the file at path, generating a
// random one there first if there is none; created reports which. It
// suits one worker, or workers that share the file: workers that share
// sessions must share the key, or each refuses the others' snapshots.
// Two processes starting at once on one file both end up with the key of
// the one that wrote it first.
func KeyFile(path string) (key []byte, created bool, err error) {
	data, err := os.ReadFile(path)
	switch {
	case err == nil:
		key, err = CheckKey(path, bytes.TrimSpace(data))
		return key, false, err
	case !errors.Is(err, fs.ErrNotExist):
		return nil, false, fmt.Errorf("kvstate: snapshot key: %w", err)
	}
	raw := make([]byte, MinMACKeyBytes)
	if _, err := rand.Read(raw); err != nil {
		return nil, false, err
	}
	key = []byte(hex.EncodeToString(raw))
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, false, fmt.Errorf("kvstate: snapshot key: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return KeyFile(path)
	}
	if err != nil {
		return nil, false, fmt.Errorf("kvstate: snapshot key: %w", err)
	}
	if _, err := f.Write(append(key, '\n')); err != nil {
		_ = f.Close()
		return nil, false, fmt.Errorf("kvstate: snapshot key: %w", err)
	}
	if err := f.Close(); err != nil {
		return nil, false, fmt.Errorf("kvstate: snapshot key: %w", err)
	}
	return key, true, nil
}

// CheckKey refuses a snapshot key shorter than MinMACKeyBytes; source
// names where it came from in the error.
func CheckKey(source string, key []byte) ([]byte, error) {
	if len(key) < MinMACKeyBytes {
		return nil, fmt.Errorf("%s: the snapshot key has %d bytes, at least %d are needed (e.g. `openssl rand -hex 32`)",
			source, len(key), MinMACKeyBytes)
	}
	return key, nil
}
