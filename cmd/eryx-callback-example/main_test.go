package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/eryx-dev/eryx/callbacks"
	"github.com/eryx-dev/eryx/callbacks/catalogue"
	"github.com/eryx-dev/eryx/runtime/sandbox"
)

func TestExampleCallbacksThroughCatalogue(t *testing.T) {
	s, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	defer s.Shutdown()
	snc, err := nats.Connect(s.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer snc.Close()
	svc := newService("eryx-example")
	svc.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	srv, err := callbacks.Start(t.Context(), snc, svc)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = srv.Stop() }()

	nc, err := nats.Connect(s.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	cat := catalogue.New(t.Context(), nc, catalogue.Options{RefreshInterval: -1})
	defer cat.Close()
	specs, err := cat.List(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(specs) != len(svc.Callbacks) {
		t.Fatalf("discovered %d callbacks, want %d", len(specs), len(svc.Callbacks))
	}
	for _, sp := range specs {
		if sp.Description == "" || !json.Valid(sp.Schema) {
			t.Errorf("%s: description %q schema %s", sp.Name, sp.Description, sp.Schema)
		}
	}

	tests := []struct {
		name, args     string
		timeout        time.Duration
		want           string // substring of the JSON result
		errType, errIn string
	}{
		{name: "add", args: `{"a":40,"b":2}`, want: `42`},
		{name: "echo", args: `{"x":[1,2]}`, want: `{"x":[1,2]}`},
		{name: "get_time", args: `{"tz":"Asia/Tokyo"}`, want: `+09:00"`},
		{name: "get_time", args: `{"tz":"Mars/Olympus"}`, errType: "ValueError", errIn: "unknown time zone"},
		{name: "divide", args: `{"a":1,"b":0}`, errType: "ZeroDivisionError", errIn: "division by zero"},
		{name: "kv.set", args: `{"key":"k","value":{"n":1}}`, want: `null`},
		{name: "kv.get", args: `{"key":"k"}`, want: `{"n":1}`},
		{name: "kv.keys", args: `{}`, want: `["k"]`},
		{name: "kv.get", args: `{"key":"missing"}`, errType: "KeyError", errIn: `"missing"`},
		{name: "sleep", args: `{"seconds":0.01}`, want: `0.01`},
		{name: "sleep", args: `{"seconds":30}`, timeout: 200 * time.Millisecond, errType: "TimeoutError", errIn: "did not answer"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx := t.Context()
			if tc.timeout > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, tc.timeout)
				defer cancel()
			}
			got, err := cat.Invoke(ctx, tc.name, json.RawMessage(tc.args))
			if tc.errType == "" {
				if err != nil || !strings.Contains(string(got), tc.want) {
					t.Fatalf("got %s, %v; want %s", got, err, tc.want)
				}
				return
			}
			var ce *sandbox.CallbackError
			if !errors.As(err, &ce) || ce.Type != tc.errType || !strings.Contains(ce.Message, tc.errIn) {
				t.Fatalf("err %v, want %s containing %q", err, tc.errType, tc.errIn)
			}
		})
	}
}

func TestRunFlags(t *testing.T) {
	if err := run([]string{"--help"}); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("--help: %v", err)
	}
	// Nothing listens on port 1: a clear connection error, not a hang.
	if err := run([]string{"--nats", "nats://127.0.0.1:1"}); err == nil || !strings.Contains(err.Error(), "connecting to") {
		t.Fatalf("unreachable server: %v", err)
	}
}
