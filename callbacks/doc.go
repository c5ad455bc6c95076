// Package callbacks is the SDK for eryx callback services: host
// capabilities that sandboxed Python code calls as `await name(...)`.
//
// A callback service is a NATS micro service (github.com/nats-io/nats.go/micro)
// whose endpoints are the callbacks. Each endpoint listens on
// "<prefix>.cb.<callback name>" in a queue group, so instances of a
// service share the load, and carries metadata (MetaCallback,
// MetaDescription, MetaSchema) that $SRV.INFO exposes and the platform's
// catalogue (package callbacks/catalogue) discovers. Requests are JSON
// objects of keyword arguments with the caller's headers (W3C trace
// context, Eryx-Timeout-Ms); replies are the JSON result, or a micro error
// reply whose body is {"type": ..., "message": ...}. docs/callbacks.md
// describes the convention for services written in other languages.
//
// A service in a few lines:
//
//	err := callbacks.Serve(ctx, nc, callbacks.Service{
//		Name: "clock",
//		Callbacks: []callbacks.Def{{
//			Name:        "get_time",
//			Description: "Current UTC time, RFC 3339",
//			Schema:      json.RawMessage(`{"type":"object","properties":{}}`),
//			Handler: func(ctx context.Context, args json.RawMessage) (any, error) {
//				return time.Now().UTC().Format(time.RFC3339), nil
//			},
//		}},
//	})
//
// This package does not import the sandbox, so a service binary does not
// link the interpreter.
package callbacks
