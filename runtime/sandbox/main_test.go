package sandbox_test

import (
	"context"
	"testing"

	"github.com/eryx-dev/eryx/internal/testenv"
	"github.com/eryx-dev/eryx/runtime/sandbox"
)

// engine is shared by the package's tests: building one takes ~1-2 s, and
// sharing it is also what production does. Tests never mutate it.
var engine *sandbox.Engine

func TestMain(m *testing.M) { testenv.Main(m, "sandbox", &engine) }

func run(t *testing.T, code string, opts sandbox.ExecOptions) *sandbox.Result {
	t.Helper()
	res, err := engine.Execute(context.Background(), code, opts)
	if err != nil {
		t.Fatalf("Execute(%q): %v", code, err)
	}
	return res
}
