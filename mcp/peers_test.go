package mcp_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// The real MCP peers (npm packages pinned in examples/mcp/package-lock.json)
// are installed once per lock file into a cache directory, which
// .ci/install-deps fills ahead of the tests.

var (
	peersOnce sync.Once
	peersDir  string
	peersErr  string
)

// needNode returns the node_modules directory of the peers. Without node
// and npm the test is skipped on a developer's machine and fails in CI
// (CI set), where they must be installed.
func needNode(t *testing.T) string {
	t.Helper()
	for _, tool := range []string{"node", "npm"} {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("CI") != "" {
				t.Fatalf("%s is not installed (CI must run the MCP peer tests; .ci/install-deps installs them)", tool)
			}
			t.Skipf("%s is not installed: the tests against real MCP peers cannot run", tool)
		}
	}
	peersOnce.Do(func() { peersDir, peersErr = installPeers() })
	if peersErr != "" {
		t.Fatal(peersErr)
	}
	return peersDir
}

// PeersDir is where the peers of a lock file go: $ERYX_NPM_CACHE (default
// ~/.cache/eryx/npm) / mcp-<hash of the lock file>.
func installPeers() (string, string) {
	lock, err := os.ReadFile("../examples/mcp/package-lock.json")
	if err != nil {
		return "", err.Error()
	}
	pkg, err := os.ReadFile("../examples/mcp/package.json")
	if err != nil {
		return "", err.Error()
	}
	base := os.Getenv("ERYX_NPM_CACHE")
	if base == "" {
		cache, err := os.UserCacheDir()
		if err != nil {
			return "", err.Error()
		}
		base = filepath.Join(cache, "eryx", "npm")
	}
	sum := sha256.Sum256(append(pkg, lock...))
	dir := filepath.Join(base, "mcp-"+hex.EncodeToString(sum[:6]))
	if _, err := os.Stat(filepath.Join(dir, "node_modules", ".installed")); err == nil {
		return filepath.Join(dir, "node_modules"), ""
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return "", err.Error()
	}
	for name, data := range map[string][]byte{"package.json": pkg, "package-lock.json": lock} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			return "", err.Error()
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "npm", "ci", "--prefer-offline", "--no-audit", "--no-fund")
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", "npm ci of the MCP peers: " + err.Error() + "\n" + string(out)
	}
	_ = os.WriteFile(filepath.Join(dir, "node_modules", ".installed"), nil, 0o600)
	return filepath.Join(dir, "node_modules"), ""
}
