package worker

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"

	"github.com/eryx-dev/eryx/runtime/sandbox"
)

// allowedCallbacks narrows a callback catalogue to a job's allow-list.
type allowedCallbacks struct {
	inner sandbox.Callbacks
	names []string
}

// allowCallbacks applies a job's allow-list: nil keeps the catalogue, an
// empty list removes every callback.
func allowCallbacks(cat sandbox.Callbacks, names []string) sandbox.Callbacks {
	switch {
	case cat == nil:
		return nil
	case names == nil:
		return cat
	case len(names) == 0:
		return nil
	}
	return &allowedCallbacks{inner: cat, names: names}
}

func (a *allowedCallbacks) List(ctx context.Context) ([]sandbox.CallbackSpec, error) {
	all, err := a.inner.List(ctx)
	if err != nil {
		return nil, err
	}
	out := all[:0:0]
	for _, spec := range all {
		if slices.Contains(a.names, spec.Name) {
			out = append(out, spec)
		}
	}
	return out, nil
}

func (a *allowedCallbacks) Invoke(ctx context.Context, name string, args json.RawMessage) (json.RawMessage, error) {
	if !slices.Contains(a.names, name) {
		// The code cannot see it, so to the code it does not exist.
		return nil, fmt.Errorf("%w: %s", sandbox.ErrUnknownCallback, name)
	}
	return a.inner.Invoke(ctx, name, args)
}
