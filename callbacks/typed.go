package callbacks

import (
	"context"
	"encoding/json"
)

// Typed adapts a function taking decoded arguments into a Handler: args
// are decoded into A with encoding/json, and arguments that do not decode
// raise TypeError in Python. The runtime has already checked them against
// the schema, so this only catches services called by other clients or a
// schema that disagrees with A.
func Typed[A, R any](fn func(ctx context.Context, args A) (R, error)) Handler {
	return func(ctx context.Context, raw json.RawMessage) (any, error) {
		var a A
		if err := json.Unmarshal(raw, &a); err != nil {
			return nil, &Error{Type: TypeTypeError, Message: "invalid arguments: " + err.Error()}
		}
		return fn(ctx, a)
	}
}
