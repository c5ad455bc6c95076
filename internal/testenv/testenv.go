// Package testenv holds the real components that tests across the project
// share: one sandbox engine per test binary, and embedded NATS servers.
// No mocks: these are the production parts, started for tests.
package testenv

import (
	"context"
	"fmt"
	"os"
	"testing"

	"github.com/eryx-dev/eryx/internal/embednats"
	"github.com/eryx-dev/eryx/runtime/sandbox"
)

// Main is a TestMain body: it builds the engine every test of the binary
// shares (a second or two, as in production, where a process has one),
// stores it in *engine, runs the tests and exits with their status.
func Main(m *testing.M, name string, engine **sandbox.Engine) {
	ctx := context.Background()
	e, err := sandbox.NewEngine(ctx, sandbox.Config{})
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s tests: %v\n", name, err)
		os.Exit(1)
	}
	*engine = e
	code := m.Run()
	_ = e.Close(ctx)
	os.Exit(code)
}

// NATS starts a NATS server with JetStream, stored in a temporary
// directory, for the duration of the test, and returns its client URL.
func NATS(t testing.TB) string {
	t.Helper()
	ns, err := embednats.Start(embednats.Options{Listen: "127.0.0.1:-1", StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ns.Shutdown)
	return ns.ClientURL()
}
