package mcp_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/eryx-dev/eryx/callbacks/catalogue"
	"github.com/eryx-dev/eryx/internal/testenv"
	"github.com/eryx-dev/eryx/jobs"
	"github.com/eryx-dev/eryx/mcp"
)

// runJob runs code on the platform and returns its result.
func (p *platform) runJob(t *testing.T, code string) *jobs.Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), bound)
	defer cancel()
	res, err := p.client.Run(ctx, jobs.DefaultQueue, &jobs.Job{Code: code}, jobs.Handlers{})
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// waitCallbacks polls until the worker's catalogue offers (or, with
// absent, no longer offers) every name: a job sees what the worker saw
// at its start.
func (p *platform) waitCallbacks(t *testing.T, present bool, names ...string) {
	t.Helper()
	list, _ := json.Marshal(names)
	code := "names = {c['name'] for c in list_callbacks()}\nresult = [n for n in " + string(list) + " if (n in names) != " + pyBool(present) + "]"
	testenv.PollUntil(t, bound, "callbacks "+string(list)+" present="+pyBool(present), func() bool {
		res := p.runJob(t, code)
		var missing []string
		return res.Status == jobs.StatusOK && json.Unmarshal(res.Result, &missing) == nil && len(missing) == 0
	})
}

func pyBool(b bool) string {
	if b {
		return "True"
	}
	return "False"
}

func TestBridgeRealServers(t *testing.T) {
	modules := needNode(t)
	p := newPlatform(t, nil)
	data := t.TempDir()
	if err := os.WriteFile(filepath.Join(data, "a.txt"), []byte("alpha"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(data, "b.txt"), []byte("beta"), 0o600); err != nil {
		t.Fatal(err)
	}
	outside := filepath.Join(t.TempDir(), "secret.txt")
	if err := os.WriteFile(outside, []byte("not yours"), 0o600); err != nil {
		t.Fatal(err)
	}
	// A variable of the bridge's own environment must not reach the
	// servers (server-everything's get-env tool would hand it out).
	t.Setenv("ERYX_TEST_BRIDGE_SECRET", "hunter2")

	cfg := mcp.BridgeConfig{
		Servers: map[string]mcp.ServerSpec{
			"fs": {Command: "node", Args: []string{filepath.Join(modules, "@modelcontextprotocol/server-filesystem/dist/index.js"), data}},
			"everything": {Command: "node", Args: []string{filepath.Join(modules, "@modelcontextprotocol/server-everything/dist/index.js")},
				Env: map[string]string{"EVERYTHING_GREETING": "configured"}},
			// Writes garbage where JSON-RPC belongs: it is retried and
			// reported, the others serve on.
			"garbage": {Command: "sh", Args: []string{"-c", "echo 'this is not JSON-RPC'; echo '{\"also\": \"wrong\"}'; exec sleep 600"}},
		},
		MaxResultBytes: 64 << 10,
	}
	ctx, cancel := context.WithCancel(t.Context())
	b, err := mcp.StartBridge(ctx, p.nc, cfg, mcp.BridgeOptions{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); b.Wait() })
	p.waitCallbacks(t, true, "mcp.fs.read_text_file", "mcp.fs.list_directory", "mcp.everything.echo", "mcp.everything.get_sum",
		"mcp.everything.get_env", "mcp.everything.get_structured_content")

	// The tool's description and input schema are the callback's.
	cat := catalogue.New(t.Context(), p.nc, catalogue.Options{RefreshInterval: -1})
	defer cat.Close()
	entries, err := cat.Entries(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.Name == "mcp.fs.read_text_file" && (!strings.Contains(string(e.Schema), `"path"`) || e.Description == "") {
			t.Errorf("read_text_file: schema %s, description %q", e.Schema, e.Description)
		}
	}

	code := strings.NewReplacer("DATA", data, "OUTSIDE", outside).Replace(`
import asyncio, json, eryx
a, b, echo, total = await asyncio.gather(
    mcp.fs.read_text_file(path="DATA/a.txt"),
    mcp.fs.read_text_file(path="DATA/b.txt"),
    mcp.everything.echo(message="hi"),
    mcp.everything.get_sum(a=2, b=3),
)
weather = await mcp.everything.get_structured_content(location="New York")
env = await mcp.everything.get_env()
import eryx
try:
    await mcp.fs.read_text_file(path="OUTSIDE")
    denied = None
except eryx.CallbackError as e:
    denied = [e.type, str(e)]
import eryx
try:
    await mcp.fs.read_text_file(path="DATA/a.txt", bogus_argument=1, head="x")
    bad_args = None
except (eryx.CallbackError, TypeError) as e:
    bad_args = type(e).__name__
result = {"a": a, "b": b, "echo": echo, "sum": total, "weather": weather, "env": env, "denied": denied, "bad_args": bad_args}
`)
	res := p.runJob(t, code)
	if res.Status != jobs.StatusOK {
		t.Fatalf("%s: %+v %s", res.Status, res.Error, res.Stderr)
	}
	var out struct {
		A, B      struct{ Content string } // server-filesystem answers structured content
		Echo, Sum string
		Weather   map[string]any
		Env       string
		Denied    []string
		BadArgs   string `json:"bad_args"`
	}
	if err := json.Unmarshal(res.Result, &out); err != nil {
		t.Fatalf("%v: %s", err, res.Result)
	}
	t.Logf("result: %s", res.Result)
	if out.A.Content != "alpha" || out.B.Content != "beta" || !strings.Contains(out.Echo, "hi") || !strings.Contains(out.Sum, "5") {
		t.Errorf("gathered calls: %+v", out)
	}
	if _, ok := out.Weather["temperature"]; !ok {
		t.Errorf("structured content did not come back parsed: %#v", out.Weather)
	}
	if strings.Contains(out.Env, "hunter2") || !strings.Contains(out.Env, "EVERYTHING_GREETING") {
		t.Errorf("server environment: %s", out.Env)
	}
	if len(out.Denied) != 2 || out.Denied[0] != mcp.TypeToolError || !strings.Contains(strings.ToLower(out.Denied[1]), "denied") {
		t.Errorf("a path outside the server's directory: %v", out.Denied)
	}
	if out.BadArgs == "" {
		t.Errorf("invalid arguments raised nothing")
	}

	// A result over max_result_bytes is refused with a clear error.
	big := strings.Repeat("x", 100<<10)
	if err := os.WriteFile(filepath.Join(data, "big.txt"), []byte(big), 0o600); err != nil {
		t.Fatal(err)
	}
	res = p.runJob(t, `
import eryx
try:
    await mcp.fs.read_text_file(path="`+data+`/big.txt")
except eryx.CallbackError as e:
    result = [e.type, str(e)]`)
	var tooBig []string
	if err := json.Unmarshal(res.Result, &tooBig); err != nil || len(tooBig) != 2 || tooBig[0] != mcp.TypeResultTooLarge || !strings.Contains(tooBig[1], "max_result_bytes") {
		t.Errorf("oversized result: %s %v", res.Result, err)
	}

	// The garbage server is reported, and restarted.
	testenv.PollUntil(t, bound, "the garbage server's failure to be reported", func() bool {
		for _, s := range b.Status() {
			if s.Name == "garbage" && s.LastError != "" && !s.Connected {
				return true
			}
		}
		return false
	})
}

// goToolServer is an MCP server of the Go SDK behind streamable HTTP
// whose tools the test changes, and which can be made to refuse.
type goToolServer struct {
	srv  *sdk.Server
	hs   *httptest.Server
	down atomic.Bool
}

func newGoToolServer(t *testing.T, key string) *goToolServer {
	g := &goToolServer{srv: sdk.NewServer(&sdk.Implementation{Name: "go-tools", Version: "1"}, nil)}
	g.addTool("add", func(args map[string]any) *sdk.CallToolResult {
		a, _ := args["a"].(float64)
		b, _ := args["b"].(float64)
		return &sdk.CallToolResult{StructuredContent: map[string]any{"sum": a + b}, Content: []sdk.Content{&sdk.TextContent{Text: "sum"}}}
	})
	g.addTool("fail", func(map[string]any) *sdk.CallToolResult {
		return &sdk.CallToolResult{IsError: true, Content: []sdk.Content{&sdk.TextContent{Text: "the tool says no"}}}
	})
	h := sdk.NewStreamableHTTPHandler(func(*http.Request) *sdk.Server { return g.srv }, nil)
	g.hs = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if g.down.Load() {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		if r.Header.Get("X-Key") != key {
			http.Error(w, "no key", http.StatusUnauthorized)
			return
		}
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(g.hs.Close)
	return g
}

func (g *goToolServer) addTool(name string, f func(map[string]any) *sdk.CallToolResult) {
	g.srv.AddTool(&sdk.Tool{Name: name, Description: "test tool " + name, InputSchema: json.RawMessage(`{"type":"object","properties":{"a":{"type":"number"},"b":{"type":"number"}}}`)},
		func(_ context.Context, req *sdk.CallToolRequest) (*sdk.CallToolResult, error) {
			var args map[string]any
			_ = json.Unmarshal(req.Params.Arguments, &args)
			return f(args), nil
		})
}

// kill ends every session from the server side and refuses new ones.
func (g *goToolServer) kill() {
	g.down.Store(true)
	for ss := range g.srv.Sessions() {
		_ = ss.Close()
	}
}

func TestBridgeHTTPServerToolsChangeAndRestart(t *testing.T) {
	p := newPlatform(t, nil)
	g := newGoToolServer(t, "k1")
	cfg := mcp.BridgeConfig{Servers: map[string]mcp.ServerSpec{
		"calc": {URL: g.hs.URL, Headers: map[string]string{"X-Key": "k1"}},
	}, CallTimeout: mcp.Duration(20 * time.Second)}
	ctx, cancel := context.WithCancel(t.Context())
	b, err := mcp.StartBridge(ctx, p.nc, cfg, mcp.BridgeOptions{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); b.Wait() })
	p.waitCallbacks(t, true, "mcp.calc.add", "mcp.calc.fail")

	res := p.runJob(t, `
r = await mcp.calc.add(a=2, b=40)
import eryx
try:
    await mcp.calc.fail()
    err = None
except eryx.CallbackError as e:
    err = [e.type, str(e)]
result = [r, err]`)
	if r := string(res.Result); !strings.Contains(r, `{"sum":42}`) || !strings.Contains(r, `["MCPToolError","MCPToolError: the tool says no"]`) {
		t.Fatalf("%s %+v", res.Result, res.Error)
	}

	// notifications/tools/list_changed: a new tool appears, a removed one
	// disappears.
	g.addTool("mul", func(args map[string]any) *sdk.CallToolResult {
		a, _ := args["a"].(float64)
		b, _ := args["b"].(float64)
		return &sdk.CallToolResult{StructuredContent: a * b, Content: []sdk.Content{&sdk.TextContent{Text: "product"}}}
	})
	g.srv.RemoveTools("fail")
	p.waitCallbacks(t, true, "mcp.calc.mul")
	p.waitCallbacks(t, false, "mcp.calc.fail")
	if res := p.runJob(t, `result = await mcp.calc.mul(a=6, b=7)`); string(res.Result) != "42" {
		t.Fatalf("mul: %s %+v", res.Result, res.Error)
	}

	// The server dies: its callbacks answer "unavailable" meanwhile, and
	// it is reconnected once it is back.
	g.kill()
	testenv.PollUntil(t, bound, "the bridge to notice the server is gone", func() bool {
		st := b.Status()
		return len(st) == 1 && !st[0].Connected
	})
	res = p.runJob(t, `
import eryx
try:
    await mcp.calc.add(a=1, b=1)
except eryx.CallbackError as e:
    result = e.type`)
	if string(res.Result) != `"`+mcp.TypeUnavailable+`"` {
		t.Fatalf("while down: %s %+v", res.Result, res.Error)
	}
	g.down.Store(false)
	testenv.PollUntil(t, bound, "the bridge to reconnect", func() bool {
		st := b.Status()
		return st[0].Connected && st[0].Restarts > 0
	})
	if res := p.runJob(t, `result = await mcp.calc.add(a=1, b=1)`); !strings.Contains(string(res.Result), `"sum":2`) {
		t.Fatalf("after restart: %s %+v", res.Result, res.Error)
	}
}
