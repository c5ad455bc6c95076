// Package catalogue discovers eryx callback services over NATS and calls
// them: *Catalogue implements sandbox.Callbacks for the worker.
//
// Services are found through micro's $SRV.INFO (see package callbacks for
// the convention), refreshed in the background and on demand when an
// unknown name is invoked. Invoke is a NATS request bounded by the
// caller's context: a service that is down gives ErrServiceUnavailable at
// once (NATS no-responders), a slow one ErrTimeout at the deadline; both
// carry a *sandbox.CallbackError for Python, as do the services' own error
// replies.
package catalogue

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/eryx-dev/eryx/callbacks"
	"github.com/eryx-dev/eryx/runtime/sandbox"
)

// Errors callers can branch on. Each one returned by Invoke also wraps a
// *sandbox.CallbackError (errors.As) that tells Python what happened.
var (
	// ErrServiceUnavailable: no service instance answers the callback's
	// subject (stopped, crashed, not yet started), or NATS is unreachable.
	ErrServiceUnavailable = errors.New("callback service unavailable")
	// ErrTimeout: the service did not answer before the context's deadline.
	ErrTimeout = errors.New("callback timed out")
	// ErrBadReply: the service answered something that is not JSON.
	ErrBadReply = errors.New("callback reply is not JSON")
)

// Python-side types of the catalogue's own errors.
const (
	TypeServiceUnavailable = "ServiceUnavailable"
	TypeTimeout            = "TimeoutError"
	TypeBadReply           = "ProtocolError"
)

// Defaults of Options.
const (
	DefaultDiscoveryWait   = 500 * time.Millisecond
	DefaultDiscoveryQuiet  = 50 * time.Millisecond
	DefaultDiscoveryMax    = 2 * time.Second
	DefaultRefreshInterval = 30 * time.Second
	DefaultMinRefresh      = time.Second
	// DefaultMaxPerService bounds the callbacks taken from one service
	// (by service name, over its instances).
	DefaultMaxPerService = 256
	// DefaultMaxTotal bounds the callbacks of the whole catalogue.
	DefaultMaxTotal = 1024
	// DefaultMaxInfoBytes bounds one $SRV.INFO reply; larger ones are
	// ignored without being decoded. (The replies of one discovery are
	// also bounded to 16 MiB together.)
	DefaultMaxInfoBytes = 1 << 20
	// DefaultMaxReplies bounds the $SRV.INFO replies of one discovery.
	DefaultMaxReplies = 256
	// DefaultMaxSpecBytes bounds one callback's description plus schema.
	DefaultMaxSpecBytes = 16 << 10
)

// Reasons for which discovery ignores callbacks or replies, passed to
// Options.OnIgnore (and used as metric labels by the worker).
const (
	IgnoredPerService = "callbacks_per_service"    // beyond MaxPerService
	IgnoredTotal      = "callbacks_total"          // beyond MaxTotal
	IgnoredSpecBytes  = "callback_spec_bytes"      // description+schema above MaxSpecBytes
	IgnoredInfoBytes  = "callback_info_bytes"      // an INFO reply above MaxInfoBytes
	IgnoredReplies    = "callback_info_replies"    // INFO replies beyond MaxReplies
	IgnoredService    = "callback_service_refused" // AllowService said no
	IgnoredSubject    = "callback_subject"         // not on <prefix>.cb.<its name>
	IgnoredSchema     = "callback_schema_invalid"  // a schema that does not compile
)

// Options tune a Catalogue. Zero fields take the defaults.
type Options struct {
	// Prefix is the platform's subject prefix (default "eryx"); only
	// callbacks on "<prefix>.cb.>" are used.
	Prefix string
	// DiscoveryWait bounds the wait for the first $SRV.INFO reply,
	// DiscoveryQuiet the gap between replies after which discovery ends,
	// DiscoveryMax the whole discovery.
	DiscoveryWait, DiscoveryQuiet, DiscoveryMax time.Duration
	// RefreshInterval is the period of background refreshes; negative
	// disables them (refreshes then happen on demand only).
	RefreshInterval time.Duration
	// MinRefresh rate-limits on-demand refreshes, which untrusted code can
	// trigger by calling names that do not exist.
	MinRefresh time.Duration
	// DefaultTimeout bounds Invoke when ctx has no deadline (default
	// sandbox.DefaultCallbackTimeout): a call never hangs.
	DefaultTimeout time.Duration
	// Inject adds headers to each request, e.g. the W3C trace context of
	// ctx (the telemetry package's propagator). It runs after the headers
	// of WithHeaders are copied, so it can override them.
	Inject func(ctx context.Context, h nats.Header)
	// Logger receives discovery warnings (default slog.Default()).
	Logger *slog.Logger

	// Bounds of discovery, so that services (or anyone able to answer
	// $SRV.INFO) cannot make the catalogue, or every job, grow without
	// limit. Zero fields take the Default* values; what is beyond is
	// ignored, logged and reported to OnIgnore.
	MaxPerService, MaxTotal, MaxSpecBytes int
	MaxInfoBytes, MaxReplies              int
	// AllowService decides whether service may serve callback name; nil
	// allows every service. Refused callbacks are ignored, as if not
	// announced (the hook for per-tenant service permissions).
	AllowService func(service, name string) bool
	// OnIgnore, if set, is told after each discovery how many callbacks
	// (or replies) were ignored for each reason (Ignored*).
	OnIgnore func(reason string, n int)
}

// limits are the bounds build applies.
type limits struct {
	perService, total, specBytes int
	allow                        func(service, name string) bool
}

func (o Options) withDefaults() Options {
	if o.Prefix == "" {
		o.Prefix = callbacks.DefaultPrefix
	}
	if o.DiscoveryWait <= 0 {
		o.DiscoveryWait = DefaultDiscoveryWait
	}
	if o.DiscoveryQuiet <= 0 {
		o.DiscoveryQuiet = DefaultDiscoveryQuiet
	}
	if o.DiscoveryMax <= 0 {
		o.DiscoveryMax = DefaultDiscoveryMax
	}
	if o.RefreshInterval == 0 {
		o.RefreshInterval = DefaultRefreshInterval
	}
	if o.MinRefresh <= 0 {
		o.MinRefresh = DefaultMinRefresh
	}
	if o.DefaultTimeout <= 0 {
		o.DefaultTimeout = sandbox.DefaultCallbackTimeout
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.MaxPerService <= 0 {
		o.MaxPerService = DefaultMaxPerService
	}
	if o.MaxTotal <= 0 {
		o.MaxTotal = DefaultMaxTotal
	}
	if o.MaxSpecBytes <= 0 {
		o.MaxSpecBytes = DefaultMaxSpecBytes
	}
	if o.MaxInfoBytes <= 0 {
		o.MaxInfoBytes = DefaultMaxInfoBytes
	}
	if o.MaxReplies <= 0 {
		o.MaxReplies = DefaultMaxReplies
	}
	return o
}

func (o Options) limits() limits {
	return limits{perService: o.MaxPerService, total: o.MaxTotal, specBytes: o.MaxSpecBytes, allow: o.AllowService}
}

// Catalogue is the callbacks discovered on a NATS connection. It is safe
// for concurrent use.
type Catalogue struct {
	nc   *nats.Conn
	opts Options
	life context.Context // ends with New's ctx or Close; bounds discoveries
	stop context.CancelFunc
	done chan struct{}

	mu          sync.Mutex
	entries     map[string]*Entry // replaced whole by each refresh, never mutated
	specs       []sandbox.CallbackSpec
	schemas     schemaCache // compiled schemas of entries, by text
	loaded      bool        // a refresh succeeded at least once
	lastAttempt time.Time   // start of the last refresh, for MinRefresh
	inflight    *refresh    // the refresh in progress, shared by its waiters
}

type refresh struct {
	done chan struct{}
	err  error
}

var _ sandbox.Callbacks = (*Catalogue)(nil)

// New returns a catalogue of the callbacks served on nc and starts its
// background refresh, which ends with ctx or Close. It does not wait for
// the first discovery: List and Invoke do when they need it.
func New(ctx context.Context, nc *nats.Conn, opts Options) *Catalogue {
	life, stop := context.WithCancel(ctx)
	c := &Catalogue{nc: nc, opts: opts.withDefaults(), life: life, stop: stop, done: make(chan struct{}), entries: map[string]*Entry{}}
	go c.loop(life)
	return c
}

// Close stops refreshing, in the background and on demand. The catalogue
// still answers from its last state.
func (c *Catalogue) Close() {
	c.stop()
	<-c.done
}

func (c *Catalogue) loop(ctx context.Context) {
	defer close(c.done)
	if err := c.Refresh(ctx); err != nil && ctx.Err() == nil {
		c.opts.Logger.Warn("callback discovery failed", "error", err)
	}
	if c.opts.RefreshInterval < 0 {
		return
	}
	t := time.NewTicker(c.opts.RefreshInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := c.Refresh(ctx); err != nil && ctx.Err() == nil {
				c.opts.Logger.Warn("callback discovery failed", "error", err)
			}
		}
	}
}

// Refresh rediscovers the services now and waits for the result (or for
// ctx). Concurrent calls share one discovery. On error the previous
// catalogue stays in place.
func (c *Catalogue) Refresh(ctx context.Context) error {
	return wait(ctx, c.startRefresh(false))
}

// refreshOnDemand refreshes unless one started within MinRefresh, in
// which case it only waits for one still in progress.
func (c *Catalogue) refreshOnDemand(ctx context.Context) error {
	r := c.startRefresh(true)
	if r == nil {
		return nil
	}
	return wait(ctx, r)
}

// startRefresh returns the refresh in progress or starts one; with
// ifStale, it starts none within MinRefresh of the last (and returns nil).
// Discovery runs on its own goroutine under the catalogue's lifetime, not
// a caller's context: other callers may be waiting on it, and it is
// bounded by DiscoveryMax anyway.
func (c *Catalogue) startRefresh(ifStale bool) *refresh {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.inflight != nil {
		return c.inflight
	}
	if ifStale && time.Since(c.lastAttempt) < c.opts.MinRefresh {
		return nil
	}
	r := &refresh{done: make(chan struct{})}
	c.inflight = r
	c.lastAttempt = time.Now()
	go c.runRefresh(r)
	return r
}

func (c *Catalogue) runRefresh(r *refresh) {
	o := c.opts
	infos, ignored, err := discover(c.life, c.nc, window{o.DiscoveryWait, o.DiscoveryQuiet, o.DiscoveryMax}, o.MaxReplies, o.MaxInfoBytes)
	var entries map[string]*Entry
	schemas := c.currentSchemas()
	if err == nil {
		var warnings []string
		var more map[string]int
		entries, warnings, more = build(infos, o.Prefix, o.limits())
		for r, n := range more {
			ignored[r] += n
		}
		for _, w := range warnings {
			o.Logger.Warn("callback discovery: " + w)
		}
		// Only this goroutine (one refresh at a time) touches schemas.
		var dropped int
		schemas, dropped = compileEntries(schemas, entries, func(format string, args ...any) {
			o.Logger.Warn("callback discovery: " + fmt.Sprintf(format, args...))
		})
		if dropped > 0 {
			ignored[IgnoredSchema] += dropped
		}
		for _, r := range slices.Sorted(maps.Keys(ignored)) {
			o.Logger.Warn("callback discovery: ignored beyond a bound", "reason", r, "count", ignored[r])
			if o.OnIgnore != nil {
				o.OnIgnore(r, ignored[r])
			}
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if err == nil {
		c.entries = entries
		c.specs = specsOf(entries)
		c.schemas = schemas
		c.loaded = true
	}
	c.inflight = nil
	r.err = err
	close(r.done)
}

func (c *Catalogue) currentSchemas() schemaCache {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.schemas
}

func wait(ctx context.Context, r *refresh) error {
	select {
	case <-r.done:
		return r.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

func specsOf(entries map[string]*Entry) []sandbox.CallbackSpec {
	out := make([]sandbox.CallbackSpec, 0, len(entries))
	for _, name := range slices.Sorted(maps.Keys(entries)) {
		out = append(out, entries[name].CallbackSpec)
	}
	return out
}

func (c *Catalogue) isLoaded() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.loaded
}

// ensureLoaded runs the first discovery if none succeeded yet.
func (c *Catalogue) ensureLoaded(ctx context.Context) error {
	if c.isLoaded() {
		return nil
	}
	return c.Refresh(ctx)
}

// List implements sandbox.Callbacks: the callbacks known now, sorted by
// name. Only the very first call waits for discovery.
func (c *Catalogue) List(ctx context.Context) ([]sandbox.CallbackSpec, error) {
	if err := c.ensureLoaded(ctx); err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.specs), nil
}

// Entries returns the discovered callbacks with their subjects and
// services, sorted by name (for `eryx-submit callbacks`).
func (c *Catalogue) Entries(ctx context.Context) ([]Entry, error) {
	if err := c.ensureLoaded(ctx); err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]Entry, 0, len(c.entries))
	for _, name := range slices.Sorted(maps.Keys(c.entries)) {
		out = append(out, *c.entries[name])
	}
	return out, nil
}

// Has reports whether name is in the catalogue as last discovered, without
// refreshing it: what metrics may label with.
func (c *Catalogue) Has(name string) bool {
	_, ok := c.lookup(name)
	return ok
}

func (c *Catalogue) lookup(name string) (*Entry, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[name]
	return e, ok
}

// Invoke implements sandbox.Callbacks: one NATS request to the callback's
// subject, bounded by ctx (or DefaultTimeout when ctx has no deadline).
// The arguments must be a JSON object that the callback's schema accepts
// (ErrInvalidArguments otherwise, and no request is sent).
func (c *Catalogue) Invoke(ctx context.Context, name string, args json.RawMessage) (json.RawMessage, error) {
	return c.invoke(ctx, name, args, "", nil)
}

// invoke is Invoke for a job of tenant ("" for none: no tenant check),
// with headers set over whatever the context carries.
func (c *Catalogue) invoke(ctx context.Context, name string, args json.RawMessage, tenant string, set nats.Header) (json.RawMessage, error) {
	e, ok := c.lookup(name)
	if !ok {
		// Perhaps a service started since the last refresh.
		err := c.refreshOnDemand(ctx)
		if err != nil && ctx.Err() != nil {
			return nil, fmt.Errorf("callback %q: %w", name, ctx.Err())
		}
		if e, ok = c.lookup(name); !ok {
			if err != nil && !c.isLoaded() {
				// Never discovered anything: "unknown" would be a lie.
				return nil, fmt.Errorf("%w: %w: %w", ErrServiceUnavailable, &sandbox.CallbackError{
					Type: TypeServiceUnavailable, Message: fmt.Sprintf("callback '%s': callback services cannot be discovered: %v", name, err)}, err)
			}
			return nil, fmt.Errorf("%w %q", sandbox.ErrUnknownCallback, name)
		}
	}
	if tenant != "" && !e.AllowsTenant(tenant) {
		// Hidden from the tenant's List: to its jobs it does not exist.
		return nil, fmt.Errorf("%w %q", sandbox.ErrUnknownCallback, name)
	}
	if err := checkArgs(e, args); err != nil {
		return nil, err
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.opts.DefaultTimeout)
		defer cancel()
	}
	msg := &nats.Msg{Subject: e.Subject, Data: args, Header: nats.Header{}}
	for k, v := range outgoing(ctx) {
		msg.Header[k] = slices.Clone(v)
	}
	if c.opts.Inject != nil {
		c.opts.Inject(ctx, msg.Header)
	}
	for k, v := range set {
		msg.Header[k] = slices.Clone(v)
	}
	dl, _ := ctx.Deadline()
	msg.Header.Set(callbacks.HeaderTimeout, strconv.FormatInt(max(time.Until(dl).Milliseconds(), 1), 10))

	start := time.Now()
	resp, err := c.nc.RequestMsgWithContext(ctx, msg)
	if err != nil {
		return nil, c.requestError(ctx, name, time.Since(start), err)
	}
	if eb, isErr := callbacks.DecodeError(resp.Header, resp.Data); isErr {
		return nil, &sandbox.CallbackError{Type: eb.Type, Message: eb.Message}
	}
	if len(resp.Data) == 0 {
		return json.RawMessage("null"), nil
	}
	if !json.Valid(resp.Data) {
		return nil, fmt.Errorf("%w: %w", ErrBadReply, &sandbox.CallbackError{
			Type: TypeBadReply, Message: fmt.Sprintf("callback '%s' (service %s) replied with invalid JSON", name, e.Service)})
	}
	return resp.Data, nil
}

func (c *Catalogue) requestError(ctx context.Context, name string, took time.Duration, err error) error {
	switch {
	case errors.Is(err, nats.ErrNoResponders):
		// The catalogue is stale: let a refresh drop the dead entry so
		// that List stops offering it.
		c.startRefresh(true)
		return fmt.Errorf("%w: %w", ErrServiceUnavailable, &sandbox.CallbackError{
			Type: TypeServiceUnavailable, Message: fmt.Sprintf("callback '%s' has no running service", name)})
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("%w: %w: %w", ErrTimeout, &sandbox.CallbackError{
			Type: TypeTimeout, Message: fmt.Sprintf("callback '%s' did not answer within %s", name, took.Round(time.Millisecond))}, err)
	case errors.Is(err, context.Canceled):
		return fmt.Errorf("callback %q: %w", name, err)
	default:
		// Connection closed, draining, disconnected...: from Python's
		// side the service cannot be reached.
		return fmt.Errorf("%w: %w: %w", ErrServiceUnavailable, &sandbox.CallbackError{
			Type: TypeServiceUnavailable, Message: fmt.Sprintf("callback '%s' cannot be reached: %v", name, err)}, err)
	}
}

type headersKey struct{}

// WithHeaders returns a context whose callback requests carry h in
// addition to the headers ctx already carries (h wins), e.g. the job's
// traceparent and id. The runtime passes the execution's context to
// Invoke, so the worker sets them once per job.
func WithHeaders(ctx context.Context, h nats.Header) context.Context {
	merged := nats.Header{}
	for k, v := range outgoing(ctx) {
		merged[k] = v
	}
	for k, v := range h {
		merged[k] = slices.Clone(v)
	}
	return context.WithValue(ctx, headersKey{}, merged)
}

func outgoing(ctx context.Context) nats.Header {
	h, _ := ctx.Value(headersKey{}).(nats.Header)
	return h
}
