package callbacks

import (
	"context"
	"errors"
	"fmt"
)

// Error is an error a handler returns to raise a typed exception in
// Python: Type "ValueError" raises ValueError there; other types raise
// eryx.CallbackError carrying the type and message (the runtime decides the
// mapping). It travels as the JSON body of a micro error reply.
//
// The SDK defines its own type rather than reusing sandbox.CallbackError so
// that a callback service binary does not link the sandbox and its
// embedded interpreter; the catalogue converts between the two.
type Error struct {
	Type    string
	Message string
}

func (e *Error) Error() string { return e.Type + ": " + e.Message }

// Errorf returns an *Error of the given type with a formatted message.
func Errorf(typ, format string, args ...any) error {
	return &Error{Type: typ, Message: fmt.Sprintf(format, args...)}
}

// typedError is what a handler's error becomes on the wire: an *Error
// anywhere in the chain keeps its type, an expired context is a
// TimeoutError, anything else is a RuntimeError with the error's text.
func typedError(err error) ErrorBody {
	var e *Error
	switch {
	case errors.As(err, &e) && e.Type != "":
		return ErrorBody{Type: e.Type, Message: e.Message}
	case errors.Is(err, context.DeadlineExceeded):
		return ErrorBody{Type: TypeTimeoutError, Message: err.Error()}
	}
	return ErrorBody{Type: TypeRuntimeError, Message: err.Error()}
}
