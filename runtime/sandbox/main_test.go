package sandbox_test

import (
	"context"
	"fmt"
	"os"
	"testing"

	"github.com/eryx-dev/eryx/runtime/sandbox"
)

// engine is shared by the package's tests: building one takes ~1-2 s, and
// sharing it is also what production does. Tests never mutate it.
var engine *sandbox.Engine

func TestMain(m *testing.M) {
	ctx := context.Background()
	var err error
	engine, err = sandbox.NewEngine(ctx, sandbox.Config{})
	if err != nil {
		fmt.Fprintln(os.Stderr, "sandbox tests:", err)
		os.Exit(1)
	}
	code := m.Run()
	_ = engine.Close(ctx)
	os.Exit(code)
}

func run(t *testing.T, code string, opts sandbox.ExecOptions) *sandbox.Result {
	t.Helper()
	res, err := engine.Execute(context.Background(), code, opts)
	if err != nil {
		t.Fatalf("Execute(%q): %v", code, err)
	}
	return res
}
