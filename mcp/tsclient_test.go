package mcp_test

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestTypeScriptClientOverStdio: the official TypeScript SDK's client
// (examples/mcp/client.mjs) drives the eryx-mcp binary over stdio.
func TestTypeScriptClientOverStdio(t *testing.T) {
	modules := needNode(t)
	p := newPlatform(t, nil)
	bin := filepath.Join(t.TempDir(), "eryx-mcp")
	if out, err := exec.CommandContext(t.Context(), "go", "build", "-o", bin, "../cmd/eryx-mcp").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	// ES modules resolve packages next to the script: run it beside the
	// peers' node_modules.
	script, err := os.ReadFile("../examples/mcp/client.mjs")
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Dir(modules)
	path := filepath.Join(dir, "client-test.mjs")
	if err := os.WriteFile(path, script, 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), bound)
	defer cancel()
	cmd := exec.CommandContext(ctx, "node", path, bin, "--nats", p.solo.URL(), "--log-level", "warn")
	cmd.Stderr = testWriter{t}
	raw, err := cmd.Output()
	if err != nil {
		t.Fatalf("node client: %v\n%s", err, raw)
	}
	var out struct {
		Tools []string
		Run   struct {
			IsError bool
			Result  float64
			Stdout  string
		}
		Session      float64
		Progress     []string
		Cancel       string
		CancelledJob string
		UnknownTool  struct {
			Code    int
			Message string
		}
		After string
	}
	if err := json.Unmarshal(raw, &out); err != nil {
		t.Fatalf("%v: %s", err, raw)
	}
	t.Logf("%s", raw)
	if !slices.Equal(out.Tools, []string{"delete_session", "list_callbacks", "reset_session", "run_python"}) {
		t.Errorf("tools %v", out.Tools)
	}
	if out.Run.IsError || out.Run.Result != 45 || out.Run.Stdout != "from ts\n" {
		t.Errorf("run %+v", out.Run)
	}
	if out.Session != 42 {
		t.Errorf("session across two calls: %v", out.Session)
	}
	if len(out.Progress) == 0 || !strings.HasPrefix(out.Progress[0], "job ") {
		t.Errorf("progress %q", out.Progress)
	}
	// The client aborts only once the loop's output reached it as a
	// progress notification: live output and cancellation both worked.
	if out.Cancel != "cancelled" || out.CancelledJob == "" {
		t.Errorf("cancel %q job %q", out.Cancel, out.CancelledJob)
	}
	if out.UnknownTool.Code != -32602 || !strings.Contains(out.UnknownTool.Message, "no_such_tool") {
		t.Errorf("unknown tool: %+v", out.UnknownTool)
	}
	if out.After != "alive" {
		t.Errorf("after: %q", out.After)
	}
	waitCancelled(t, p, out.CancelledJob)
}
