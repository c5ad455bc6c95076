package mcp

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/nats-io/nats.go"

	"github.com/eryx-dev/eryx/callbacks"
)

// Defaults of BridgeConfig.
const (
	DefaultMaxResultBytes = 1 << 20
	DefaultCallTimeout    = 30 * time.Second
	DefaultConnectTimeout = 30 * time.Second
	DefaultMaxBackoff     = time.Minute
	// DefaultMaxTools bounds the tools taken from one server (the
	// catalogue has its own bound per service, too).
	DefaultMaxTools = 256
)

// Error types the bridge raises in Python (as eryx.CallbackError with
// this .type).
const (
	// TypeToolError: the tool answered with isError.
	TypeToolError = "MCPToolError"
	// TypeUnavailable: the MCP server is down (being restarted).
	TypeUnavailable = "MCPServerUnavailable"
	// TypeResultTooLarge: the tool's result is over max_result_bytes.
	TypeResultTooLarge = "MCPResultTooLarge"
	// TypeProtocolError: the call failed at the protocol level.
	TypeProtocolError = "MCPError"
)

// Duration is a time.Duration written as "30s" in JSON.
type Duration time.Duration

// UnmarshalJSON implements json.Unmarshaler.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("duration: want a string such as \"30s\": %w", err)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	if v < 0 {
		return fmt.Errorf("duration %q is negative", s)
	}
	*d = Duration(v)
	return nil
}

// BridgeConfig is the bridge's configuration file. Its "mcpServers"
// object has the shape MCP clients use, so an existing client
// configuration can be reused.
type BridgeConfig struct {
	Servers map[string]ServerSpec `json:"mcpServers"`
	// MaxResultBytes caps one tool result as JSON (DefaultMaxResultBytes).
	MaxResultBytes int `json:"max_result_bytes,omitempty"`
	// CallTimeout caps one tool call (DefaultCallTimeout); the calling
	// job's own callback budget may shorten it.
	CallTimeout Duration `json:"call_timeout,omitempty"`
	// MaxConcurrent bounds the calls in flight per server
	// (callbacks.DefaultMaxConcurrent).
	MaxConcurrent int `json:"max_concurrent,omitempty"`
}

// ServerSpec is one MCP server: a command (stdio) or a URL (streamable
// HTTP).
type ServerSpec struct {
	Command string            `json:"command,omitempty"`
	Args    []string          `json:"args,omitempty"`
	Env     map[string]string `json:"env,omitempty"`
	Dir     string            `json:"cwd,omitempty"`
	URL     string            `json:"url,omitempty"`
	Headers map[string]string `json:"headers,omitempty"`
	// Tools, if set, is the list of the server's tools to offer; others
	// are left out.
	Tools []string `json:"tools,omitempty"`
}

var identRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// LoadBridgeConfig reads and validates a configuration file.
func LoadBridgeConfig(path string) (*BridgeConfig, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var cfg BridgeConfig
	dec := json.NewDecoder(strings.NewReader(string(data)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&cfg); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &cfg, nil
}

// ErrInvalidConfig reports a bridge configuration that cannot be used.
var ErrInvalidConfig = errors.New("invalid bridge configuration")

// Validate checks the configuration.
func (c *BridgeConfig) Validate() error {
	if len(c.Servers) == 0 {
		return fmt.Errorf("%w: no servers in \"mcpServers\"", ErrInvalidConfig)
	}
	for name, s := range c.Servers {
		switch {
		case !identRE.MatchString(name) || pythonKeywords[name]:
			return fmt.Errorf("%w: server name %q must be a Python identifier (it becomes mcp.%s.<tool>)", ErrInvalidConfig, name, name)
		case (s.Command == "") == (s.URL == ""):
			return fmt.Errorf("%w: server %s: set exactly one of \"command\" and \"url\"", ErrInvalidConfig, name)
		case s.URL != "" && !strings.HasPrefix(s.URL, "http://") && !strings.HasPrefix(s.URL, "https://"):
			return fmt.Errorf("%w: server %s: url %q is not http(s)", ErrInvalidConfig, name, s.URL)
		}
	}
	if c.MaxResultBytes < 0 || c.MaxConcurrent < 0 {
		return fmt.Errorf("%w: negative limit", ErrInvalidConfig)
	}
	return nil
}

// Bridge serves the tools of MCP servers as eryx callbacks
// mcp.<server>.<tool>.
type Bridge struct {
	cfg    BridgeConfig
	nc     *nats.Conn
	prefix string
	log    *slog.Logger

	servers []*bridged
	wg      sync.WaitGroup
}

// BridgeOptions are the parts of a bridge that are not in its file.
type BridgeOptions struct {
	// Prefix is the platform's subject prefix (default "eryx").
	Prefix string
	Logger *slog.Logger
	// Stderr receives the stderr of stdio servers (default: discarded).
	Stderr *os.File
}

// StartBridge connects to every server (in the background, with
// retries) and serves their tools until ctx ends. Wait returns after.
func StartBridge(ctx context.Context, nc *nats.Conn, cfg BridgeConfig, opts BridgeOptions) (*Bridge, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.MaxResultBytes == 0 {
		cfg.MaxResultBytes = DefaultMaxResultBytes
	}
	if cfg.CallTimeout == 0 {
		cfg.CallTimeout = Duration(DefaultCallTimeout)
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	b := &Bridge{cfg: cfg, nc: nc, prefix: opts.Prefix, log: opts.Logger}
	names := slices.Sorted(maps.Keys(cfg.Servers))
	for _, name := range names {
		s := &bridged{b: b, name: name, spec: cfg.Servers[name], stderr: opts.Stderr,
			log: opts.Logger.With("mcp_server", name), changed: make(chan struct{}, 1)}
		b.servers = append(b.servers, s)
		b.wg.Add(1)
		go func() {
			defer b.wg.Done()
			s.supervise(ctx)
		}()
	}
	return b, nil
}

// Wait returns once every server's supervisor has stopped (after ctx
// ended).
func (b *Bridge) Wait() { b.wg.Wait() }

// ServerStatus is one bridged server's state.
type ServerStatus struct {
	Name      string
	Connected bool
	Tools     []string // callback names served
	LastError string
	Restarts  int
}

// Status reports every server's state.
func (b *Bridge) Status() []ServerStatus {
	out := make([]ServerStatus, 0, len(b.servers))
	for _, s := range b.servers {
		out = append(out, s.status())
	}
	return out
}

// bridged is one MCP server and the callback service of its tools.
type bridged struct {
	b      *Bridge
	name   string
	spec   ServerSpec
	stderr *os.File
	log    *slog.Logger
	// changed is signalled by notifications/tools/list_changed.
	changed chan struct{}

	mu       sync.Mutex
	session  *sdk.ClientSession // nil while down
	svc      *callbacks.Server
	tools    []string
	lastErr  string
	restarts int
}

func (s *bridged) status() ServerStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	return ServerStatus{Name: s.name, Connected: s.session != nil, Tools: slices.Clone(s.tools), LastError: s.lastErr, Restarts: s.restarts}
}

// supervise keeps the server connected: it (re)starts it with
// exponential backoff, and re-lists its tools when they change. While
// the server is down its callbacks stay registered and answer
// MCPServerUnavailable, so that code gets a clear error rather than an
// unknown name.
func (s *bridged) supervise(ctx context.Context) {
	defer s.stopService()
	backoff := time.Second
	for ctx.Err() == nil {
		started := time.Now()
		err := s.runOnce(ctx)
		if ctx.Err() != nil {
			return
		}
		s.mu.Lock()
		s.session = nil
		s.lastErr = err.Error()
		s.restarts++
		s.mu.Unlock()
		if time.Since(started) > 2*DefaultMaxBackoff {
			backoff = time.Second // it ran fine for a while
		}
		s.log.Warn("MCP server down; restarting", "err", err, "in", backoff)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, DefaultMaxBackoff)
	}
}

// runOnce connects, serves the tools and returns when the connection
// ends.
func (s *bridged) runOnce(ctx context.Context) error {
	client := sdk.NewClient(&sdk.Implementation{Name: "eryx-mcp-bridge", Version: "1"}, &sdk.ClientOptions{
		ToolListChangedHandler: func(context.Context, *sdk.ToolListChangedRequest) {
			select {
			case s.changed <- struct{}{}:
			default:
			}
		},
	})
	cctx, cancel := context.WithTimeout(ctx, DefaultConnectTimeout)
	defer cancel()
	cs, err := client.Connect(cctx, s.transport(), nil)
	if err != nil {
		return fmt.Errorf("connecting: %w", err)
	}
	defer func() { _ = cs.Close() }()
	stop := context.AfterFunc(ctx, func() { _ = cs.Close() })
	defer stop()
	ended := make(chan error, 1)
	go func() { ended <- cs.Wait() }()

	if err := s.refresh(ctx, cs); err != nil {
		return err
	}
	s.mu.Lock()
	s.session, s.lastErr = cs, ""
	s.mu.Unlock()
	s.log.Info("MCP server connected", "tools", len(s.status().Tools))
	for {
		select {
		case err := <-ended:
			if err == nil {
				err = errors.New("connection closed")
			}
			return err
		case <-s.changed:
			if err := s.refresh(ctx, cs); err != nil {
				return err
			}
			s.log.Info("MCP server's tools changed", "tools", len(s.status().Tools))
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (s *bridged) transport() sdk.Transport {
	if s.spec.URL != "" {
		return &sdk.StreamableClientTransport{Endpoint: s.spec.URL, HTTPClient: &http.Client{Transport: headerTransport(s.spec.Headers)}}
	}
	cmd := exec.Command(s.spec.Command, s.spec.Args...) //nolint:gosec // the operator's configuration names the command
	cmd.Dir = s.spec.Dir
	cmd.Env = childEnv(s.spec.Env)
	if s.stderr != nil {
		cmd.Stderr = s.stderr
	}
	return &sdk.CommandTransport{Command: cmd, TerminateDuration: 2 * time.Second}
}

// childEnv is the environment of a stdio server: a minimal base and the
// configured variables, not the bridge's own environment (which may hold
// NATS credentials that a tool such as a "print environment" one would
// hand to sandboxed code).
func childEnv(extra map[string]string) []string {
	var env []string
	for _, k := range []string{"PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "TZ", "SYSTEMROOT", "USERPROFILE", "APPDATA"} {
		if v, ok := os.LookupEnv(k); ok {
			env = append(env, k+"="+v)
		}
	}
	for _, k := range slices.Sorted(maps.Keys(extra)) {
		env = append(env, k+"="+extra[k])
	}
	return env
}

type headerTransport map[string]string

func (h headerTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if len(h) > 0 {
		r = r.Clone(r.Context())
		for k, v := range h {
			r.Header.Set(k, v)
		}
	}
	return http.DefaultTransport.RoundTrip(r)
}

// refresh lists the server's tools and (re)registers the callback
// service when they changed.
func (s *bridged) refresh(ctx context.Context, cs *sdk.ClientSession) error {
	lctx, cancel := context.WithTimeout(ctx, DefaultConnectTimeout)
	defer cancel()
	var tools []*sdk.Tool
	for t, err := range cs.Tools(lctx, nil) {
		if err != nil {
			return fmt.Errorf("listing tools: %w", err)
		}
		tools = append(tools, t)
		if len(tools) > DefaultMaxTools {
			s.log.Warn("MCP server offers too many tools; the rest are left out", "max", DefaultMaxTools)
			tools = tools[:DefaultMaxTools]
			break
		}
	}
	defs := s.defs(tools)
	names := make([]string, len(defs))
	for i, d := range defs {
		names[i] = d.Name
	}
	// Always re-registered: descriptions and schemas may change under
	// the same names.
	return s.register(ctx, defs, names)
}

// register starts the new service before stopping the old one, so that
// tools present in both never disappear.
func (s *bridged) register(ctx context.Context, defs []callbacks.Def, names []string) error {
	var svc *callbacks.Server
	if len(defs) > 0 {
		var err error
		svc, err = callbacks.Start(ctx, s.b.nc, callbacks.Service{
			Name:          "mcp-" + s.name,
			Version:       "1.0.0",
			Description:   "tools of the MCP server " + s.name + " (eryx-mcp bridge)",
			Prefix:        s.b.prefix,
			Callbacks:     defs,
			MaxConcurrent: s.b.cfg.MaxConcurrent,
			Timeout:       time.Duration(s.b.cfg.CallTimeout),
			Logger:        s.log,
		})
		if err != nil {
			return fmt.Errorf("registering callbacks: %w", err)
		}
	}
	s.mu.Lock()
	old := s.svc
	s.svc, s.tools = svc, names
	s.mu.Unlock()
	if old != nil {
		_ = old.Stop()
	}
	return nil
}

func (s *bridged) stopService() {
	s.mu.Lock()
	old := s.svc
	s.svc, s.tools, s.session = nil, nil, nil
	s.mu.Unlock()
	if old != nil {
		_ = old.Stop()
	}
}

// defs turns tools into callbacks, with Python-safe names.
func (s *bridged) defs(tools []*sdk.Tool) []callbacks.Def {
	allow := map[string]bool{}
	for _, t := range s.spec.Tools {
		allow[t] = true
	}
	sort.Slice(tools, func(i, j int) bool { return tools[i].Name < tools[j].Name })
	seen := map[string]bool{}
	var defs []callbacks.Def
	for _, t := range tools {
		if len(allow) > 0 && !allow[t.Name] {
			continue
		}
		py := pyName(t.Name)
		if seen[py] {
			s.log.Warn("two tools map to one Python name; the second is left out", "tool", t.Name, "name", py)
			continue
		}
		seen[py] = true
		name := "mcp." + s.name + "." + py
		var schema json.RawMessage
		if t.InputSchema != nil {
			if b, err := json.Marshal(t.InputSchema); err == nil {
				schema = b
			}
		}
		if !isObjectSchema(schema) {
			schema = json.RawMessage(`{"type":"object"}`)
		}
		desc := t.Description
		if desc == "" {
			desc = t.Title
		}
		defs = append(defs, callbacks.Def{Name: name, Description: desc, Schema: schema, Handler: s.handler(t.Name)})
	}
	return defs
}

func isObjectSchema(b json.RawMessage) bool {
	var m map[string]any
	return json.Unmarshal(b, &m) == nil && m != nil
}

// pyName makes a tool name a Python identifier: other characters become
// '_', and keywords get a trailing '_'.
func pyName(tool string) string {
	var b strings.Builder
	for i, r := range tool {
		switch {
		case r == '_' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z':
			b.WriteRune(r)
		case r >= '0' && r <= '9':
			if i == 0 {
				b.WriteByte('_')
			}
			b.WriteRune(r)
		default:
			b.WriteByte('_')
		}
	}
	name := b.String()
	if name == "" {
		name = "_"
	}
	if pythonKeywords[name] {
		name += "_"
	}
	return name
}

var pythonKeywords = map[string]bool{
	"False": true, "None": true, "True": true, "and": true, "as": true, "assert": true, "async": true,
	"await": true, "break": true, "class": true, "continue": true, "def": true, "del": true, "elif": true,
	"else": true, "except": true, "finally": true, "for": true, "from": true, "global": true, "if": true,
	"import": true, "in": true, "is": true, "lambda": true, "nonlocal": true, "not": true, "or": true,
	"pass": true, "raise": true, "return": true, "try": true, "while": true, "with": true, "yield": true,
}

// handler calls tool on the current session.
func (s *bridged) handler(tool string) callbacks.Handler {
	return func(ctx context.Context, args json.RawMessage) (any, error) {
		s.mu.Lock()
		cs, lastErr := s.session, s.lastErr
		s.mu.Unlock()
		if cs == nil {
			return nil, callbacks.Errorf(TypeUnavailable, "MCP server %s is unavailable (restarting after: %s)", s.name, lastErr)
		}
		res, err := cs.CallTool(ctx, &sdk.CallToolParams{Name: tool, Arguments: args})
		if err != nil {
			if ctx.Err() != nil {
				return nil, callbacks.Errorf(callbacks.TypeTimeoutError, "MCP tool %s.%s: no answer within the call's time limit", s.name, tool)
			}
			return nil, callbacks.Errorf(TypeProtocolError, "MCP tool %s.%s: %v", s.name, tool, err)
		}
		if res.IsError {
			return nil, callbacks.Errorf(TypeToolError, "%s", bounded(contentText(res.Content), 4096))
		}
		out, err := resultValue(res)
		if err != nil {
			return nil, callbacks.Errorf(TypeProtocolError, "MCP tool %s.%s: %v", s.name, tool, err)
		}
		if len(out) > s.b.cfg.MaxResultBytes {
			return nil, callbacks.Errorf(TypeResultTooLarge, "MCP tool %s.%s returned %d bytes, over the bridge's limit (max_result_bytes) of %d",
				s.name, tool, len(out), s.b.cfg.MaxResultBytes)
		}
		return out, nil
	}
}

// resultValue is what Python gets: the structured content when there is
// some, else the text (one string), else the content blocks as JSON.
func resultValue(res *sdk.CallToolResult) (json.RawMessage, error) {
	if res.StructuredContent != nil {
		return json.Marshal(res.StructuredContent)
	}
	allText := true
	for _, c := range res.Content {
		if _, ok := c.(*sdk.TextContent); !ok {
			allText = false
		}
	}
	if allText {
		return json.Marshal(contentText(res.Content))
	}
	return json.Marshal(res.Content)
}

func contentText(cs []sdk.Content) string {
	var parts []string
	for _, c := range cs {
		if t, ok := c.(*sdk.TextContent); ok {
			parts = append(parts, t.Text)
		}
	}
	return strings.Join(parts, "\n")
}

func bounded(s string, n int) string {
	if len(s) > n {
		return strings.ToValidUTF8(s[:n], "") + "…"
	}
	return s
}
