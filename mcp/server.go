// Package mcp connects eryx to the Model Context Protocol, in both
// directions: Server offers eryx to MCP clients (agents) as a run_python
// tool with sessions, and Bridge offers the tools of MCP servers to
// sandboxed code as eryx callbacks ("code mode"). Both are built on the
// official Go SDK (github.com/modelcontextprotocol/go-sdk). docs/mcp.md
// describes them.
package mcp

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/eryx-dev/eryx/callbacks/catalogue"
	"github.com/eryx-dev/eryx/jobs"
	"github.com/eryx-dev/eryx/kvstate"
)

// Defaults of ServerConfig.
const (
	DefaultMaxCodeBytes = 1 << 20
	DefaultMaxInFlight  = 16
	DefaultMaxWait      = 10 * time.Minute
	// DefaultMaxTraceEvents bounds the trace events returned by one call:
	// an agent's context is small, the events stream has all of them.
	DefaultMaxTraceEvents = 500
	// DefaultMaxRequestBytes bounds one JSON-RPC message (stdio line or
	// HTTP body).
	DefaultMaxRequestBytes = 4 << 20
)

// Sessions is what the session tools need of the session store;
// *kvstate.Store implements it.
type Sessions interface {
	Delete(ctx context.Context, id string) error
}

// ServerConfig configures a Server.
type ServerConfig struct {
	// Client submits the jobs. Required.
	Client *jobs.Client
	// Queue the jobs go to (jobs.DefaultQueue).
	Queue string
	// Catalogue lists the callbacks for list_callbacks; nil: the tool
	// reports none.
	Catalogue *catalogue.Catalogue
	// Sessions backs reset_session and delete_session; nil leaves them
	// out.
	Sessions Sessions
	// MaxCodeBytes refuses larger code before it is submitted
	// (DefaultMaxCodeBytes; the workers have their own limit too).
	MaxCodeBytes int
	// MaxInFlight bounds the run_python calls running at once across all
	// clients (DefaultMaxInFlight); more are refused, not queued.
	MaxInFlight int
	// MaxWait bounds one call, queueing included (DefaultMaxWait): a job
	// still without a result then is cancelled.
	MaxWait time.Duration
	// MaxTraceEvents bounds the trace events in one result.
	MaxTraceEvents int
	// Version is reported to clients.
	Version string
	Logger  *slog.Logger
}

// Server is an MCP server whose tools run code on eryx.
type Server struct {
	cfg      ServerConfig
	mcp      *sdk.Server
	inFlight atomic.Int64

	mu       sync.Mutex
	sessions map[string]*sessionWatch // by HTTP session id
}

// NewServer builds the server and its tools.
func NewServer(cfg ServerConfig) (*Server, error) {
	if cfg.Client == nil {
		return nil, errors.New("mcp: ServerConfig.Client is required")
	}
	if cfg.Queue == "" {
		cfg.Queue = jobs.DefaultQueue
	}
	if cfg.MaxCodeBytes <= 0 {
		cfg.MaxCodeBytes = DefaultMaxCodeBytes
	}
	if cfg.MaxInFlight <= 0 {
		cfg.MaxInFlight = DefaultMaxInFlight
	}
	if cfg.MaxWait <= 0 {
		cfg.MaxWait = DefaultMaxWait
	}
	if cfg.MaxTraceEvents <= 0 {
		cfg.MaxTraceEvents = DefaultMaxTraceEvents
	}
	if cfg.Version == "" {
		cfg.Version = "dev"
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Server{cfg: cfg, sessions: map[string]*sessionWatch{}}
	s.mcp = sdk.NewServer(&sdk.Implementation{Name: "eryx", Title: "eryx Python sandbox", Version: cfg.Version},
		&sdk.ServerOptions{Instructions: instructions, Logger: cfg.Logger})
	sdk.AddTool(s.mcp, &sdk.Tool{
		Name: "run_python", Title: "Run Python in the eryx sandbox", Description: runPythonDescription,
		Annotations: &sdk.ToolAnnotations{OpenWorldHint: ptr(false)},
	}, s.runPython)
	sdk.AddTool(s.mcp, &sdk.Tool{
		Name: "list_callbacks", Title: "List the callbacks sandboxed code can call", Description: listCallbacksDescription,
		Annotations: &sdk.ToolAnnotations{ReadOnlyHint: true},
	}, s.listCallbacks)
	if cfg.Sessions != nil {
		sdk.AddTool(s.mcp, &sdk.Tool{
			Name: "reset_session", Title: "Reset a session", Description: resetSessionDescription,
			Annotations: &sdk.ToolAnnotations{DestructiveHint: ptr(true), IdempotentHint: true},
		}, s.resetSession)
		sdk.AddTool(s.mcp, &sdk.Tool{
			Name: "delete_session", Title: "Delete a session", Description: deleteSessionDescription,
			Annotations: &sdk.ToolAnnotations{DestructiveHint: ptr(true)},
		}, s.deleteSession)
	}
	return s, nil
}

func ptr[T any](v T) *T { return &v }

// MCP returns the SDK server, to run on a transport (Run, Connect).
func (s *Server) MCP() *sdk.Server { return s.mcp }

// RunStdio serves one client on stdin/stdout until it disconnects or ctx
// ends.
func (s *Server) RunStdio(ctx context.Context) error {
	return s.RunIO(ctx, os.Stdin, os.Stdout)
}

// RunIO serves one client on newline-delimited JSON-RPC over r and w
// until r ends or ctx ends. Bad lines get JSON-RPC errors, and the
// session goes on.
func (s *Server) RunIO(ctx context.Context, r io.Reader, w io.Writer) error {
	return s.mcp.Run(ctx, &lineTransport{r: r, w: w, maxLine: DefaultMaxRequestBytes})
}

// HTTPHandler serves the streamable HTTP transport. A non-empty token is
// required from every request as "Authorization: Bearer <token>".
func (s *Server) HTTPHandler(token string) http.Handler {
	h := sdk.NewStreamableHTTPHandler(func(*http.Request) *sdk.Server { return s.mcp },
		&sdk.StreamableHTTPOptions{Logger: s.cfg.Logger, MaxRequestBodyBytes: DefaultMaxRequestBytes,
			// Idle sessions of vanished clients are closed, not kept
			// forever.
			SessionTimeout: 30 * time.Minute})
	ends := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodDelete {
			if id := r.Header.Get("Mcp-Session-Id"); id != "" {
				s.endSession(id)
			}
		}
		h.ServeHTTP(w, r)
	})
	if token == "" {
		return ends
	}
	return bearer(token, ends)
}

// bearer requires the token, compared in constant time.
func bearer(token string, next http.Handler) http.Handler {
	want := []byte("Bearer " + token)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got := []byte(r.Header.Get("Authorization"))
		if subtle.ConstantTimeCompare(got, want) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="eryx-mcp"`)
			http.Error(w, "missing or wrong bearer token", http.StatusUnauthorized)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// RunInput are the arguments of run_python.
type RunInput struct {
	Code           string  `json:"code" jsonschema:"Python 3.11 source to run; top-level await works"`
	Session        string  `json:"session,omitempty" jsonschema:"optional session id (letters, digits, - and _): variables, imports and functions persist across calls with the same id"`
	TimeoutSeconds float64 `json:"timeout_seconds,omitempty" jsonschema:"optional run time limit in seconds; it can only lower the server's limit"`
	Trace          bool    `json:"trace,omitempty" jsonschema:"return line-level trace events (calls, callbacks, exceptions)"`
}

// RunError is an exception raised by the code.
type RunError struct {
	Type      string `json:"type"`
	Message   string `json:"message"`
	Traceback string `json:"traceback,omitempty"`
	Line      int    `json:"line,omitempty"`
}

// RunOutput is the structured result of run_python.
type RunOutput struct {
	JobID  string `json:"job_id"`
	Status string `json:"status" jsonschema:"ok, error, timeout, cancelled or rejected"`
	Stdout string `json:"stdout"`
	Stderr string `json:"stderr"`
	// Result is the JSON value of the code's `result` variable.
	Result      any       `json:"result,omitempty" jsonschema:"the JSON value of the variable named result, if the code set one"`
	ResultError string    `json:"result_error,omitempty"`
	Error       *RunError `json:"error,omitempty"`
	ExitCode    *int      `json:"exit_code,omitempty"`
	// Reason, Code and Limit say why a job was rejected or stopped.
	Reason          string            `json:"reason,omitempty"`
	Code            string            `json:"code,omitempty"`
	Limit           string            `json:"limit,omitempty"`
	OutputTruncated bool              `json:"output_truncated,omitempty"`
	Session         string            `json:"session,omitempty"`
	SessionError    string            `json:"session_error,omitempty"`
	SessionSkipped  []string          `json:"session_skipped,omitempty"`
	Trace           []json.RawMessage `json:"trace,omitempty"`
	TraceTruncated  bool              `json:"trace_truncated,omitempty"`
	DurationMS      float64           `json:"duration_ms"`
}

// errToolInput is a tool call the server refuses before running anything.
var errToolInput = errors.New("invalid arguments")

func (s *Server) runPython(ctx context.Context, req *sdk.CallToolRequest, in RunInput) (*sdk.CallToolResult, *RunOutput, error) {
	if err := s.checkRun(in); err != nil {
		return nil, nil, err
	}
	if n := s.inFlight.Add(1); n > int64(s.cfg.MaxInFlight) {
		s.inFlight.Add(-1)
		return nil, nil, fmt.Errorf("busy: %d runs in flight, the limit (max_in_flight) is %d; retry later", n-1, s.cfg.MaxInFlight)
	}
	defer s.inFlight.Add(-1)
	// The SDK ends a call's context on notifications/cancelled and when
	// stdin reaches EOF, but an HTTP session's end (DELETE) waits for the
	// calls in flight: a job nobody waits for must stop then too.
	ctx, stop := context.WithCancel(ctx)
	defer stop()
	if req.Session != nil {
		ended, release := s.watchSession(req.Session.ID())
		defer release()
		go func() {
			select {
			case <-ended:
				stop()
			case <-ctx.Done():
			}
		}()
	}

	job := &jobs.Job{ID: uuid.NewString(), Code: in.Code, Session: in.Session, Trace: in.Trace}
	if in.TimeoutSeconds > 0 {
		job.TimeoutMS = max(1, int64(in.TimeoutSeconds*1000))
	}
	log := s.cfg.Logger.With("job", job.ID)
	p := newProgress(ctx, req)
	p.send("job " + job.ID + " queued")

	var trace []json.RawMessage
	traceTruncated := false
	handlers := jobs.Handlers{
		Output: func(kind jobs.EventKind, data []byte) { p.output(kind, data) },
		Trace: func(ev jobs.TraceEvent) {
			if len(trace) >= s.cfg.MaxTraceEvents {
				traceTruncated = true
				return
			}
			trace = append(trace, ev.Event)
		},
	}
	wctx, cancel := context.WithTimeout(ctx, s.cfg.MaxWait)
	defer cancel()
	res, err := s.cfg.Client.Run(wctx, s.cfg.Queue, job, handlers)
	if err != nil {
		// The client cancelled (notifications/cancelled), went away, or
		// the wait ran out: the job must not run on for nobody.
		reason := "the MCP client cancelled the call"
		if ctx.Err() == nil && wctx.Err() != nil {
			reason = fmt.Sprintf("no result within %v (max_wait)", s.cfg.MaxWait)
		}
		cctx, ccancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer ccancel()
		if cerr := s.cfg.Client.Cancel(cctx, job.ID, reason); cerr != nil {
			log.Warn("cancelling job", "err", cerr)
		}
		log.Info("run_python ended without a result", "reason", reason, "err", err)
		if ctx.Err() == nil && wctx.Err() != nil {
			return nil, nil, fmt.Errorf("job %s: %s; it was cancelled", job.ID, reason)
		}
		return nil, nil, fmt.Errorf("job %s: %w", job.ID, err)
	}
	out := toOutput(res)
	out.Trace, out.TraceTruncated = trace, traceTruncated || res.TraceTruncated
	log.Info("run_python", "status", res.Status, "ms", res.Stats.DurationMS)
	return &sdk.CallToolResult{
		Content: []sdk.Content{&sdk.TextContent{Text: readable(out)}},
		IsError: res.Status != jobs.StatusOK,
	}, out, nil
}

// sessionWatch lets the runs of one HTTP session learn that the client
// ended it.
type sessionWatch struct {
	runs  int
	ended chan struct{}
}

// watchSession returns a channel closed when the client deletes HTTP
// session id, and the function to call when the run is over.
func (s *Server) watchSession(id string) (<-chan struct{}, func()) {
	if id == "" {
		return nil, func() {}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	w := s.sessions[id]
	if w == nil {
		w = &sessionWatch{ended: make(chan struct{})}
		s.sessions[id] = w
	}
	w.runs++
	return w.ended, func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if w.runs--; w.runs == 0 && s.sessions[id] == w {
			delete(s.sessions, id)
		}
	}
}

// endSession signals the runs of HTTP session id.
func (s *Server) endSession(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if w := s.sessions[id]; w != nil {
		close(w.ended)
		delete(s.sessions, id)
	}
}

// checkRun refuses what the workers would reject anyway, with an error
// the agent can act on.
func (s *Server) checkRun(in RunInput) error {
	switch {
	case strings.TrimSpace(in.Code) == "":
		return fmt.Errorf("%w: code is empty", errToolInput)
	case len(in.Code) > s.cfg.MaxCodeBytes:
		return fmt.Errorf("%w: code is %d bytes, over the limit (code_bytes) of %d", errToolInput, len(in.Code), s.cfg.MaxCodeBytes)
	case in.Session != "" && !jobs.ValidToken(in.Session):
		return fmt.Errorf("%w: session %q: use letters, digits, '-' and '_'", errToolInput, in.Session)
	case in.TimeoutSeconds < 0:
		return fmt.Errorf("%w: timeout_seconds must be positive", errToolInput)
	}
	return nil
}

func toOutput(res *jobs.Result) *RunOutput {
	out := &RunOutput{
		JobID: res.ID, Status: string(res.Status), Stdout: res.Stdout, Stderr: res.Stderr,
		ResultError: res.ResultError, ExitCode: res.ExitCode, Reason: res.Reason, Code: string(res.Code),
		Limit: res.Limit, OutputTruncated: res.OutputTruncated, Session: res.Session,
		SessionError: res.SessionError, DurationMS: res.Stats.DurationMS,
	}
	if len(res.Result) > 0 {
		var v any
		if json.Unmarshal(res.Result, &v) == nil {
			out.Result = v
		}
	}
	if e := res.Error; e != nil {
		out.Error = &RunError{Type: e.Type, Message: e.Message, Traceback: e.Traceback, Line: e.Line}
	}
	for _, v := range res.SessionSkipped {
		out.SessionSkipped = append(out.SessionSkipped, v.Name+": "+v.Reason)
	}
	return out
}

// readable is the text content: what a model reads when it ignores the
// structured content.
func readable(o *RunOutput) string {
	var b strings.Builder
	fmt.Fprintf(&b, "status: %s", o.Status)
	if o.Code != "" {
		fmt.Fprintf(&b, " (%s)", o.Code)
	}
	if o.Limit != "" {
		fmt.Fprintf(&b, " [limit %s]", o.Limit)
	}
	b.WriteString("\n")
	if o.Reason != "" {
		fmt.Fprintf(&b, "reason: %s\n", o.Reason)
	}
	section := func(name, body string) {
		if body != "" {
			fmt.Fprintf(&b, "--- %s ---\n%s", name, body)
			if !strings.HasSuffix(body, "\n") {
				b.WriteString("\n")
			}
		}
	}
	section("stdout", o.Stdout)
	section("stderr", o.Stderr)
	if o.Error != nil {
		body := o.Error.Traceback
		if body == "" {
			body = o.Error.Type + ": " + o.Error.Message
		}
		section("error", body)
	}
	if o.Result != nil {
		r, _ := json.Marshal(o.Result)
		section("result", string(r))
	}
	if o.ResultError != "" {
		section("result error", o.ResultError)
	}
	if o.ExitCode != nil {
		fmt.Fprintf(&b, "exit code: %d\n", *o.ExitCode)
	}
	if o.OutputTruncated {
		b.WriteString("(output truncated at the output limit)\n")
	}
	if o.Session != "" {
		fmt.Fprintf(&b, "session: %s", o.Session)
		if o.SessionError != "" {
			fmt.Fprintf(&b, " (not saved: %s)", o.SessionError)
		}
		b.WriteString("\n")
		for _, v := range o.SessionSkipped {
			fmt.Fprintf(&b, "  not kept: %s\n", v)
		}
	}
	if len(o.Trace) > 0 {
		fmt.Fprintf(&b, "trace: %d events in the structured content\n", len(o.Trace))
	}
	return b.String()
}

// progress turns a job's output into progress notifications, when the
// client asked for them with a progress token.
type progress struct {
	ctx   context.Context
	ss    *sdk.ServerSession
	token any
	n     float64
}

func newProgress(ctx context.Context, req *sdk.CallToolRequest) *progress {
	p := &progress{ctx: ctx, ss: req.Session}
	if req.Params != nil {
		p.token = req.Params.GetProgressToken()
	}
	return p
}

func (p *progress) send(msg string) { p.notify(msg, nil) }

func (p *progress) output(kind jobs.EventKind, data []byte) {
	p.notify(strings.ToValidUTF8(string(data), string(utf8.RuneError)), sdk.Meta{"eryx/stream": string(kind)})
}

func (p *progress) notify(msg string, meta sdk.Meta) {
	if p.token == nil || p.ss == nil {
		return
	}
	p.n++
	// A client that cannot take the notification does not stop the job.
	_ = p.ss.NotifyProgress(p.ctx, &sdk.ProgressNotificationParams{Meta: meta, ProgressToken: p.token, Progress: p.n, Message: msg})
}

// CallbackInfo describes one callback for list_callbacks.
type CallbackInfo struct {
	Name        string `json:"name"`
	Description string `json:"description,omitempty"`
	Parameters  any    `json:"parameters,omitempty" jsonschema:"JSON Schema of the keyword arguments"`
	Service     string `json:"service"`
}

// CallbackList is the result of list_callbacks.
type CallbackList struct {
	Callbacks []CallbackInfo `json:"callbacks"`
}

func (s *Server) listCallbacks(ctx context.Context, _ *sdk.CallToolRequest, _ struct{}) (*sdk.CallToolResult, *CallbackList, error) {
	out := &CallbackList{Callbacks: []CallbackInfo{}}
	if s.cfg.Catalogue == nil {
		return textResult("no callbacks are available"), out, nil
	}
	// A fresh discovery: services (and the bridge's tools) come and go.
	if err := s.cfg.Catalogue.Refresh(ctx); err != nil {
		s.cfg.Logger.Warn("callback discovery", "err", err)
	}
	entries, err := s.cfg.Catalogue.Entries(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("discovering callbacks: %w", err)
	}
	var b strings.Builder
	for _, e := range entries {
		ci := CallbackInfo{Name: e.Name, Description: e.Description, Service: e.Service}
		if len(e.Schema) > 0 {
			var v any
			if json.Unmarshal(e.Schema, &v) == nil {
				ci.Parameters = v
			}
		}
		out.Callbacks = append(out.Callbacks, ci)
		fmt.Fprintf(&b, "await %s(...)  %s\n", e.Name, firstLineOf(e.Description))
		if len(e.Schema) > 0 {
			fmt.Fprintf(&b, "    parameters: %s\n", e.Schema)
		}
	}
	if len(entries) == 0 {
		b.WriteString("no callbacks are available\n")
	}
	return textResult(b.String()), out, nil
}

func firstLineOf(s string) string {
	l, _, _ := strings.Cut(s, "\n")
	return l
}

func textResult(s string) *sdk.CallToolResult {
	return &sdk.CallToolResult{Content: []sdk.Content{&sdk.TextContent{Text: s}}}
}

// SessionInput names a session.
type SessionInput struct {
	Session string `json:"session" jsonschema:"the session id used with run_python"`
}

// SessionOutput reports what a session tool did.
type SessionOutput struct {
	Session string `json:"session"`
	Existed bool   `json:"existed"`
}

func (s *Server) resetSession(ctx context.Context, _ *sdk.CallToolRequest, in SessionInput) (*sdk.CallToolResult, *SessionOutput, error) {
	existed, err := s.dropSession(ctx, in.Session)
	if err != nil {
		return nil, nil, err
	}
	return textResult(fmt.Sprintf("session %s reset: the next run_python with it starts from an empty namespace", in.Session)),
		&SessionOutput{Session: in.Session, Existed: existed}, nil
}

func (s *Server) deleteSession(ctx context.Context, _ *sdk.CallToolRequest, in SessionInput) (*sdk.CallToolResult, *SessionOutput, error) {
	existed, err := s.dropSession(ctx, in.Session)
	if err != nil {
		return nil, nil, err
	}
	if !existed {
		return nil, nil, fmt.Errorf("session %s does not exist (it never ran, expired or was deleted)", in.Session)
	}
	return textResult(fmt.Sprintf("session %s deleted", in.Session)), &SessionOutput{Session: in.Session, Existed: true}, nil
}

// dropSession deletes the session's stored state; the workers notice the
// missing revision and drop their warm copy at the session's next job.
func (s *Server) dropSession(ctx context.Context, id string) (bool, error) {
	if !jobs.ValidToken(id) || !kvstate.ValidID(id) {
		return false, fmt.Errorf("%w: session %q: use letters, digits, '-' and '_'", errToolInput, id)
	}
	// Session keys are per tenant (jobs.SessionKey): this client's tenant.
	err := s.cfg.Sessions.Delete(ctx, jobs.SessionKey(s.cfg.Client.Tenant(), id))
	switch {
	case errors.Is(err, kvstate.ErrNotFound):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("session %s: %w", id, err)
	}
	return true, nil
}
