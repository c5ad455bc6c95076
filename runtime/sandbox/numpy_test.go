package sandbox_test

import (
	"context"
	"sync"
	"testing"

	"github.com/eryx-dev/eryx/runtime/assets"
	"github.com/eryx-dev/eryx/runtime/sandbox"
)

// numpyEngine is built once, on first use, by the tests that need the numpy
// image; the other tests of the package use the minimal image.
var numpyEngine = sync.OnceValues(func() (*sandbox.Engine, error) {
	return sandbox.NewEngine(context.Background(), sandbox.Config{Image: assets.ImageNumpy})
})

func npEngine(t *testing.T) *sandbox.Engine {
	t.Helper()
	e, err := numpyEngine()
	if err != nil {
		t.Fatalf("numpy image: %v", err)
	}
	return e
}

func runNP(t *testing.T, code string, opts sandbox.ExecOptions) *sandbox.Result {
	t.Helper()
	res, err := npEngine(t).Execute(context.Background(), code, opts)
	if err != nil {
		t.Fatalf("Execute(%q): %v", code, err)
	}
	return res
}

func TestNumpySmoke(t *testing.T) {
	res := runNP(t, "import numpy as np\nprint(np.__version__, np.arange(10).sum(), np.linalg.inv(np.eye(2)).tolist())", sandbox.ExecOptions{})
	t.Logf("%+v", res)
}
