package callbacks

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
)

// Defaults of Service.
const (
	// DefaultVersion is the service version when Service.Version is empty.
	DefaultVersion = "0.1.0"
	// DefaultMaxConcurrent bounds the handlers a service runs at once.
	DefaultMaxConcurrent = 64
	// DefaultHandlerTimeout bounds one handler when the caller sent no
	// budget, so that a forgotten request cannot pin a slot forever.
	DefaultHandlerTimeout = time.Minute
)

// budgetGrace extends the caller's budget on the service side, so that
// the caller's own deadline fires first and it reports a timeout, rather
// than racing the reply of a handler whose context just expired.
const budgetGrace = 50 * time.Millisecond

// maxHeaderText bounds the error description copied into a header: headers
// are single-line and small, the JSON body carries the full message.
const maxHeaderText = 512

// Handler implements one callback. args is the JSON object of keyword
// arguments ("{}" when the caller sent none). The result is encoded as
// JSON (a json.RawMessage is sent as is). An error becomes a Python
// exception: return an *Error (see Errorf) to choose its type.
//
// ctx carries the request's headers (RequestHeaders) and ends when the
// caller's time budget runs out.
type Handler func(ctx context.Context, args json.RawMessage) (any, error)

// Middleware wraps the handler of def, e.g. to extract the W3C trace
// context from RequestHeaders(ctx) and start a span. Middleware sees
// panics of the handler as panics: the SDK recovers them outside all
// middleware.
type Middleware func(def Def, next Handler) Handler

// Def defines one callback.
type Def struct {
	// Name is how Python calls it: a Python identifier, dotted for
	// namespaces ("http.get"). It is also the last tokens of the subject.
	Name string
	// Description tells the model or the user what the callback does.
	Description string
	// Schema is the JSON Schema of the keyword arguments: an object schema
	// whose property order gives the positional order. Optional.
	Schema json.RawMessage
	// Handler runs the callback.
	Handler Handler
}

// Service describes a callback service: one micro service whose endpoints
// are the callbacks.
type Service struct {
	// Name of the micro service (letters, digits, '-', '_').
	Name string
	// Version is a SemVer string (default DefaultVersion).
	Version string
	// Description of the service.
	Description string
	// Prefix is the platform's subject prefix (default "eryx"): callback
	// "x" listens on "<prefix>.cb.x".
	Prefix string
	// QueueGroup spreads requests over the instances of the service
	// (default "q", micro's own default).
	QueueGroup string
	// Metadata is extra service metadata shown by $SRV.INFO.
	Metadata map[string]string
	// Tenants, if set, are the only tenants whose jobs may call the
	// service (MetaTenants); the platform-wide default is every tenant.
	Tenants []string
	// Callbacks are the endpoints.
	Callbacks []Def
	// MaxConcurrent bounds the handlers running at once across the
	// service (default DefaultMaxConcurrent). Further requests wait in the
	// connection's buffers. 1 runs handlers one at a time on micro's own
	// goroutine, which keeps micro's STATS processing times exact.
	MaxConcurrent int
	// Timeout bounds one handler (default DefaultHandlerTimeout); the
	// caller's budget (header Eryx-Timeout-Ms) shortens it.
	Timeout time.Duration
	// Middleware wraps every handler; the first is outermost.
	Middleware []Middleware
	// Logger receives panics and reply failures (default slog.Default()).
	Logger *slog.Logger
}

// Server is a running callback service.
type Server struct {
	nc      *nats.Conn
	ms      micro.Service
	base    context.Context
	timeout time.Duration
	inline  bool
	sem     chan struct{}
	log     *slog.Logger
	eps     map[string]*endpoint // by micro endpoint name; read-only after Start

	stopOnce sync.Once
	stopErr  error
	done     chan struct{}
}

type endpoint struct {
	def     Def
	handler Handler
	// Counters for $SRV.STATS: micro's own error count misses replies sent
	// from our goroutines, so the service reports its own in "data".
	inFlight, errors, panics atomic.Int64
}

// EndpointStats is the "data" of each endpoint in $SRV.STATS.
type EndpointStats struct {
	InFlight int64 `json:"in_flight"`
	Errors   int64 `json:"errors"`
	Panics   int64 `json:"panics"`
}

// ErrInvalidService reports a Service that cannot be started.
var ErrInvalidService = errors.New("callbacks: invalid service")

// Start registers the service on nc and returns at once. The service stops
// when ctx ends, when Stop is called or when nc closes. Handlers get a
// context that keeps ctx's values but not its cancellation, so that a
// stopping service finishes the requests it accepted.
func Start(ctx context.Context, nc *nats.Conn, svc Service) (*Server, error) {
	if nc == nil {
		return nil, fmt.Errorf("%w: nil connection", ErrInvalidService)
	}
	if err := svc.normalize(); err != nil {
		return nil, err
	}
	s := &Server{
		nc:      nc,
		base:    context.WithoutCancel(ctx),
		timeout: svc.Timeout,
		inline:  svc.MaxConcurrent == 1,
		sem:     make(chan struct{}, svc.MaxConcurrent),
		log:     svc.Logger,
		eps:     make(map[string]*endpoint, len(svc.Callbacks)),
		done:    make(chan struct{}),
	}
	meta := maps.Clone(svc.Metadata)
	if meta == nil {
		meta = map[string]string{}
	}
	meta[MetaProtocol] = ProtocolVersion
	if len(svc.Tenants) > 0 {
		meta[MetaTenants] = strings.Join(svc.Tenants, ",")
	}

	ms, err := micro.AddService(nc, micro.Config{
		Name:         svc.Name,
		Version:      svc.Version,
		Description:  svc.Description,
		Metadata:     meta,
		QueueGroup:   svc.QueueGroup,
		StatsHandler: s.stats,
		// The service also stops when the connection closes; finish our
		// side of the stop (waiting for handlers, closing Done) then too.
		DoneHandler: func(micro.Service) { go func() { _ = s.Stop() }() },
		ErrorHandler: func(_ micro.Service, e *micro.NATSError) {
			s.log.Warn("callback service: subscription error", "service", svc.Name, "subject", e.Subject, "error", e.Description)
		},
	})
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidService, err)
	}
	s.ms = ms

	for _, d := range svc.Callbacks {
		ep := &endpoint{def: d, handler: d.Handler}
		for i := len(svc.Middleware) - 1; i >= 0; i-- {
			ep.handler = svc.Middleware[i](d, ep.handler)
		}
		epMeta := map[string]string{MetaCallback: d.Name}
		if d.Description != "" {
			epMeta[MetaDescription] = d.Description
		}
		if len(d.Schema) > 0 {
			epMeta[MetaSchema] = string(d.Schema)
		}
		name := EndpointName(d.Name)
		s.eps[name] = ep
		err := ms.AddEndpoint(name, micro.HandlerFunc(func(req micro.Request) { s.dispatch(ep, req) }),
			micro.WithEndpointSubject(Subject(svc.Prefix, d.Name)),
			micro.WithEndpointMetadata(epMeta))
		if err != nil {
			_ = ms.Stop()
			return nil, fmt.Errorf("%w: callback %q: %w", ErrInvalidService, d.Name, err)
		}
	}
	// Once Start returns the server knows every subscription, so a
	// discovery that follows sees the whole service.
	if err := nc.FlushTimeout(10 * time.Second); err != nil {
		_ = s.Stop()
		return nil, fmt.Errorf("callbacks: registering %s: %w", svc.Name, err)
	}
	context.AfterFunc(ctx, func() { _ = s.Stop() })
	return s, nil
}

// Serve runs the service until ctx ends (it then stops gracefully and
// returns nil) or nc closes (it returns an error wrapping
// nats.ErrConnectionClosed).
func Serve(ctx context.Context, nc *nats.Conn, svc Service) error {
	s, err := Start(ctx, nc, svc)
	if err != nil {
		return err
	}
	<-s.Done()
	if ctx.Err() == nil && nc.IsClosed() {
		return fmt.Errorf("callbacks: service %s stopped: %w", svc.Name, nats.ErrConnectionClosed)
	}
	return s.stopErr
}

// Stop unregisters the service and waits for the handlers in flight to
// reply. Calling it again is harmless. Do not call it from a handler.
func (s *Server) Stop() error {
	s.stopOnce.Do(func() {
		if err := s.ms.Stop(); err != nil {
			s.stopErr = fmt.Errorf("callbacks: stopping: %w", err)
		}
		// Once Stop returns the server has dropped our interest, so new
		// requests get no-responders at once instead of reaching us.
		_ = s.nc.FlushTimeout(5 * time.Second)
		// Taking every slot waits for the handlers holding one.
		for range cap(s.sem) {
			s.sem <- struct{}{}
		}
		for range cap(s.sem) {
			<-s.sem
		}
		close(s.done)
	})
	return s.stopErr
}

// Done is closed once the service has stopped and its handlers finished.
func (s *Server) Done() <-chan struct{} { return s.done }

// Info returns the service's micro info, as $SRV.INFO shows it.
func (s *Server) Info() micro.Info { return s.ms.Info() }

func (s *Server) stats(e *micro.Endpoint) any {
	ep := s.eps[e.Name]
	if ep == nil {
		return nil
	}
	return EndpointStats{InFlight: ep.inFlight.Load(), Errors: ep.errors.Load(), Panics: ep.panics.Load()}
}

// dispatch runs on micro's subscription goroutine. Blocking on the
// semaphore there is the back-pressure: further requests queue in the
// subscription instead of spawning unbounded goroutines.
func (s *Server) dispatch(ep *endpoint, req micro.Request) {
	s.sem <- struct{}{}
	if s.inline {
		defer func() { <-s.sem }()
		s.serve(ep, req)
		return
	}
	go func() {
		defer func() { <-s.sem }()
		s.serve(ep, req)
	}()
}

func (s *Server) serve(ep *endpoint, req micro.Request) {
	ep.inFlight.Add(1)
	defer ep.inFlight.Add(-1)
	body, eb, code := s.run(ep, req)
	if eb != nil {
		ep.errors.Add(1)
	}
	if req.Reply() == "" {
		return // a publish, not a request: nobody to answer
	}
	if err := s.reply(req, body, eb, code); err != nil {
		s.log.Warn("callback service: reply failed", "callback", ep.def.Name, "error", err)
	}
}

// run calls the handler and encodes its outcome: a JSON body, or a typed
// error with its code.
func (s *Server) run(ep *endpoint, req micro.Request) (body []byte, eb *ErrorBody, code string) {
	defer func() {
		if r := recover(); r != nil {
			ep.panics.Add(1)
			s.log.Error("callback panicked", "callback", ep.def.Name, "panic", r, "stack", string(debug.Stack()))
			body, code = nil, CodeInternal
			eb = &ErrorBody{Type: TypeInternalError, Message: fmt.Sprintf("callback %q panicked: %v", ep.def.Name, r)}
		}
	}()

	hdr := nats.Header(req.Headers())
	timeout := s.timeout
	if ms, err := strconv.ParseInt(hdrGet(hdr, HeaderTimeout), 10, 64); err == nil && ms > 0 {
		timeout = min(timeout, time.Duration(ms)*time.Millisecond+budgetGrace)
	}
	ctx, cancel := context.WithTimeout(context.WithValue(s.base, requestKey{}, &requestInfo{header: hdr, subject: req.Subject()}), timeout)
	defer cancel()

	args := json.RawMessage(req.Data())
	if len(bytes.TrimSpace(args)) == 0 {
		args = json.RawMessage("{}")
	}
	res, err := ep.handler(ctx, args)
	if err != nil {
		e := typedError(err)
		return nil, &e, CodeCallbackError
	}
	body, err = encodeResult(res)
	if err != nil {
		return nil, &ErrorBody{Type: TypeInternalError, Message: fmt.Sprintf("callback %q: %v", ep.def.Name, err)}, CodeInternal
	}
	return body, nil, ""
}

func encodeResult(res any) ([]byte, error) {
	switch v := res.(type) {
	case nil:
		return []byte("null"), nil
	case json.RawMessage:
		if !json.Valid(v) {
			return nil, errors.New("result is not valid JSON")
		}
		return v, nil
	}
	b, err := json.Marshal(res)
	if err != nil {
		return nil, fmt.Errorf("result is not JSON-encodable: %w", err)
	}
	return b, nil
}

// reply answers through micro's Request on micro's goroutine (so that
// micro counts errors), and publishes directly from our own goroutines:
// micro's Request records reply errors in an unsynchronised field that
// micro reads as soon as the handler returns.
func (s *Server) reply(req micro.Request, body []byte, eb *ErrorBody, code string) error {
	if eb == nil {
		if s.inline {
			return req.Respond(body)
		}
		return s.nc.PublishMsg(&nats.Msg{Subject: req.Reply(), Data: body})
	}
	if eb.Message == "" {
		eb.Message = "(no message)"
	}
	data, err := json.Marshal(eb)
	if err != nil {
		return err
	}
	desc := headerText(eb.Message)
	if s.inline {
		return req.Error(code, desc, data, micro.WithHeaders(micro.Headers{HeaderErrorType: {headerText(eb.Type)}}))
	}
	return s.nc.PublishMsg(&nats.Msg{
		Subject: req.Reply(),
		Header: nats.Header{
			HeaderServiceError:     {desc},
			HeaderServiceErrorCode: {code},
			HeaderErrorType:        {headerText(eb.Type)},
		},
		Data: data,
	})
}

// headerText makes s a valid, bounded, single-line header value.
func headerText(s string) string {
	s = strings.Map(func(r rune) rune {
		if r == '\r' || r == '\n' || r < 0x20 && r != '\t' {
			return ' '
		}
		return r
	}, s)
	if len(s) > maxHeaderText {
		s = s[:maxHeaderText] + "…"
	}
	if s == "" {
		s = "(no message)"
	}
	return s
}

func hdrGet(h nats.Header, k string) string {
	if v := h[k]; len(v) > 0 {
		return v[0]
	}
	return ""
}

// normalize applies defaults and validates, so that Start fails before
// anything is registered.
func (svc *Service) normalize() error {
	if svc.Version == "" {
		svc.Version = DefaultVersion
	}
	if svc.Prefix == "" {
		svc.Prefix = DefaultPrefix
	}
	if svc.QueueGroup == "" {
		svc.QueueGroup = DefaultQueueGroup
	}
	if svc.MaxConcurrent <= 0 {
		svc.MaxConcurrent = DefaultMaxConcurrent
	}
	if svc.Timeout <= 0 {
		svc.Timeout = DefaultHandlerTimeout
	}
	if svc.Logger == nil {
		svc.Logger = slog.Default()
	}
	if !ValidPrefix(svc.Prefix) {
		return fmt.Errorf("%w: prefix %q is not a plain subject", ErrInvalidService, svc.Prefix)
	}
	if len(svc.Callbacks) == 0 {
		return fmt.Errorf("%w: %s has no callbacks", ErrInvalidService, svc.Name)
	}
	seen := make(map[string]bool, len(svc.Callbacks))
	defs := make([]Def, len(svc.Callbacks))
	for i, d := range svc.Callbacks {
		switch {
		case !ValidName(d.Name):
			return fmt.Errorf("%w: callback name %q is not a (dotted) Python identifier", ErrInvalidService, d.Name)
		case seen[d.Name]:
			return fmt.Errorf("%w: callback %q defined twice", ErrInvalidService, d.Name)
		case d.Handler == nil:
			return fmt.Errorf("%w: callback %q has no handler", ErrInvalidService, d.Name)
		}
		seen[d.Name] = true
		if len(d.Schema) > 0 {
			schema, err := compactObject(d.Schema)
			if err != nil {
				return fmt.Errorf("%w: callback %q: schema: %w", ErrInvalidService, d.Name, err)
			}
			d.Schema = schema
		}
		defs[i] = d
	}
	svc.Callbacks = defs // a copy: the caller's slice is left alone
	return nil
}

// compactObject checks that raw is a JSON object and compacts it, since it
// travels in a metadata string on every $SRV.INFO reply.
func compactObject(raw json.RawMessage) (json.RawMessage, error) {
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(raw, &obj); err != nil || obj == nil {
		return nil, fmt.Errorf("not a JSON object: %s", firstLine(raw))
	}
	var b bytes.Buffer
	if err := json.Compact(&b, raw); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

func firstLine(b []byte) string {
	s, _, _ := strings.Cut(string(b), "\n")
	if len(s) > 40 {
		s = s[:40] + "…"
	}
	return s
}

type requestKey struct{}

type requestInfo struct {
	header  nats.Header
	subject string
}

// RequestHeaders returns the headers of the request a handler serves (W3C
// trace context, Eryx-Timeout-Ms, anything the caller added), or nil
// outside a handler. Treat it as read-only.
func RequestHeaders(ctx context.Context) nats.Header {
	if ri, ok := ctx.Value(requestKey{}).(*requestInfo); ok {
		return ri.header
	}
	return nil
}

// RequestTenant returns the tenant of the job that made the request (the
// worker's Eryx-Tenant header), or "".
func RequestTenant(ctx context.Context) string { return RequestHeaders(ctx).Get(HeaderTenant) }

// RequestJob returns the id of the job that made the request, or "".
func RequestJob(ctx context.Context) string { return RequestHeaders(ctx).Get(HeaderJob) }

// RequestSubject returns the subject the request arrived on, or "".
func RequestSubject(ctx context.Context) string {
	if ri, ok := ctx.Value(requestKey{}).(*requestInfo); ok {
		return ri.subject
	}
	return ""
}

// Extract returns a middleware that derives each handler's context from
// the request headers with fn: the hook for trace propagation, e.g.
// callbacks.Extract(tel.Extract) with the telemetry package, so that the
// handler's spans continue the job's trace.
func Extract(fn func(ctx context.Context, h nats.Header) context.Context) Middleware {
	return func(_ Def, next Handler) Handler {
		return func(ctx context.Context, args json.RawMessage) (any, error) {
			return next(fn(ctx, RequestHeaders(ctx)), args)
		}
	}
}
