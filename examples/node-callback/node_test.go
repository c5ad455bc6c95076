// Package nodecallback holds the test of the Node.js callback example: it
// runs service.js against an embedded nats-server and calls it through the
// Go catalogue, as a worker would.
package nodecallback

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/eryx-dev/eryx/callbacks/catalogue"
	"github.com/eryx-dev/eryx/internal/check"
	"github.com/eryx-dev/eryx/runtime/sandbox"
)

// installDeps runs `npm ci` once per checkout; --prefer-offline serves it
// from npm's cache when the cache has nats@2.29.3.
func installDeps(t *testing.T) {
	t.Helper()
	if _, err := os.Stat("node_modules/nats/package.json"); err == nil {
		return
	}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "npm", "ci", "--prefer-offline", "--no-audit", "--no-fund")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("npm ci: %v\n%s", err, out)
	}
}

func TestNodeCallbackService(t *testing.T) {
	for _, tool := range []string{"node", "npm"} {
		_, err := exec.LookPath(tool)
		check.Needs(t, err, tool+" (Node.js >= 18, for the Node.js callback example)")
	}
	installDeps(t)

	s, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	defer s.Shutdown()

	// The service, as a separate process.
	node := exec.Command("node", "service.js")
	node.Env = append(os.Environ(), "NATS_URL="+s.ClientURL(), "ERYX_PREFIX=eryx")
	node.Stderr = os.Stderr
	stdout, err := node.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := node.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- node.Wait() }()
	defer func() {
		_ = node.Process.Kill()
		t.Logf("node exited: %v", <-exited)
	}()
	ready := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), "ready") {
				ready <- sc.Text()
			}
		}
	}()
	select {
	case line := <-ready:
		t.Log("node:", line)
	case err := <-exited:
		t.Fatalf("node exited before it was ready: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("node service not ready after 30 s")
	}

	nc, err := nats.Connect(s.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	cat := catalogue.New(t.Context(), nc, catalogue.Options{RefreshInterval: -1, MinRefresh: time.Millisecond})
	defer cat.Close()

	// Discovery: names, descriptions and schemas from $SRV.INFO.
	entries, err := cat.Entries(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name)
		if e.Service != "eryx-node-example" || e.Description == "" || !json.Valid(e.Schema) || e.Subject != "eryx.cb."+e.Name {
			t.Errorf("entry %+v", e)
		}
	}
	if got := strings.Join(names, ","); got != "node.context,node.crash,node.fail,node.greet,node.sum" {
		t.Fatalf("discovered %s", got)
	}
	var schema struct {
		Required []string `json:"required"`
	}
	if err := json.Unmarshal(entries[3].Schema, &schema); err != nil || len(schema.Required) != 1 || schema.Required[0] != "name" {
		t.Fatalf("greet schema %s", entries[3].Schema)
	}

	// Invocation and error mapping.
	ctx := catalogue.WithHeaders(t.Context(), nats.Header{"traceparent": {"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}})
	tests := []struct {
		name, args, want string
		errType, errIn   string
	}{
		{name: "node.greet", args: `{"name":"eryx"}`, want: `"Hello, eryx!"`},
		{name: "node.sum", args: `{"numbers":[1,2,3.5]}`, want: `6.5`},
		// Refused by the worker against the schema, before the service sees it.
		{name: "node.sum", args: `{"numbers":"nope"}`, errType: "TypeError", errIn: "want array"},
		{name: "node.fail", args: `{"message":"bad\ninput"}`, errType: "ValueError", errIn: "bad\ninput"},
		{name: "node.crash", args: `{}`, errType: "InternalError", errIn: "undefined is not a function"},
		{name: "node.context", args: `{}`, want: `"traceparent":"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01","has_deadline":true`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
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

	// The service dies: calls fail at once with a clear error.
	_ = node.Process.Kill()
	t.Logf("node killed: %v", <-exited)
	exited <- nil // for the deferred cleanup
	waitCtx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	for {
		// A short budget per attempt: a request sent before the server
		// noticed the dead connection would otherwise wait out waitCtx.
		attemptCtx, cancelAttempt := context.WithTimeout(waitCtx, 500*time.Millisecond)
		_, err := cat.Invoke(attemptCtx, "node.greet", json.RawMessage(`{"name":"x"}`))
		cancelAttempt()
		if errors.Is(err, catalogue.ErrServiceUnavailable) {
			var ce *sandbox.CallbackError
			if !errors.As(err, &ce) || ce.Type != "ServiceUnavailable" {
				t.Fatalf("err %v", err)
			}
			break
		}
		// Until the server notices the dead connection, requests time out.
		if waitCtx.Err() != nil {
			t.Fatalf("never reported unavailable: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
