package jobs

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Errors of the client that callers branch on.
var (
	// ErrNoStreams: the platform's streams do not exist (no worker has
	// ever started on this server).
	ErrNoStreams = errors.New("jobs: the eryx streams do not exist (is a worker running?)")
	// ErrNoResult: the job has no result (yet, or any more).
	ErrNoResult = errors.New("jobs: no result")
	// ErrIDTaken: the server dropped the submission as a duplicate, but
	// the message that holds the id is not this job (a different body, a
	// Nats-Msg-Id that disagrees with its id, or it was answered under
	// another id). Submit again under a new id.
	ErrIDTaken = errors.New("jobs: the job id is held by a different message")
	// ErrQueueFull: the tenant has as many jobs queued on the queue as
	// the jobs stream takes (Topology.MaxQueuedPerTenant); submit later.
	ErrQueueFull = errors.New("jobs: the tenant's queue is full (max_queued)")
	// ErrNotAccepted: Submit gave up before the jobs stream confirmed the
	// job (a leader election, a partition or a disconnection outlasted
	// the retry budget). The job may have been stored all the same, its
	// confirmation lost: submitting it again under the same id is safe
	// (the stream deduplicates it, the worker runs an id once). The error
	// is a *SubmitError.
	ErrNotAccepted = errors.New("jobs: the jobs stream did not accept the job")
)

// DefaultSubmitRetry is how long Submit keeps retrying a publication the
// jobs stream did not confirm (WithSubmitRetry).
const DefaultSubmitRetry = 30 * time.Second

// SubmitError is Submit's error when it gave up retrying: errors.Is(err,
// ErrNotAccepted) holds, and Err is the last publication's error.
type SubmitError struct {
	ID       string
	Attempts int
	Elapsed  time.Duration
	Err      error
}

func (e *SubmitError) Error() string {
	return fmt.Sprintf("jobs: job %s not accepted by the jobs stream after %d attempts in %v (the same id may be submitted again): %v",
		e.ID, e.Attempts, e.Elapsed.Round(time.Millisecond), e.Err)
}

func (e *SubmitError) Unwrap() []error { return []error{ErrNotAccepted, e.Err} }

// DefaultMaxAttempts is the workers' default ERYX_MAX_DELIVER: a watcher
// ignores events that claim a later attempt than this.
const DefaultMaxAttempts = 3

// Client submits jobs and follows their events. It is safe for
// concurrent use.
type Client struct {
	nc          *nats.Conn
	js          jetstream.JetStream
	subjects    Subjects
	tenant      string
	onPublish   PublishHook
	maxAttempts int
	retry       time.Duration // Submit's retry budget
}

// PublishHook is called with each job message before it is published, to
// add headers (the trace context of ctx, say); the returned function gets
// the publication's outcome.
type PublishHook func(ctx context.Context, msg *nats.Msg, id string) func(error)

// ClientOption configures a Client.
type ClientOption func(*Client)

// WithPublishHook installs a PublishHook.
func WithPublishHook(h PublishHook) ClientOption { return func(c *Client) { c.onPublish = h } }

// WithMaxAttempts tells watches the workers' ERYX_MAX_DELIVER (default
// DefaultMaxAttempts): live events claiming a later attempt are ignored.
func WithMaxAttempts(n int) ClientOption { return func(c *Client) { c.maxAttempts = n } }

// WithSubmitRetry sets how long Submit retries a publication that failed
// in a way a retry can mend (timeout, no responders, no stream leader,
// disconnection), always with the same Nats-Msg-Id so that the stream
// stores the job once (default DefaultSubmitRetry; <= 0: no retries).
func WithSubmitRetry(d time.Duration) ClientOption { return func(c *Client) { c.retry = d } }

// WithTenant makes the client submit, follow, cancel and look up the jobs
// of tenant (default DefaultTenant). Its NATS user must be allowed the
// tenant's subjects; the server, not this option, is what enforces it.
func WithTenant(tenant string) ClientOption { return func(c *Client) { c.tenant = tenant } }

// NewClient returns a client using nc.
func NewClient(nc *nats.Conn, subjects Subjects, opts ...ClientOption) (*Client, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	c := &Client{nc: nc, js: js, subjects: subjects, tenant: DefaultTenant, maxAttempts: DefaultMaxAttempts, retry: DefaultSubmitRetry}
	for _, o := range opts {
		o(c)
	}
	if err := ValidTenant(c.tenant); err != nil {
		return nil, err
	}
	return c, nil
}

// Tenant returns the tenant the client acts for.
func (c *Client) Tenant() string { return c.tenant }

// JetStream exposes the client's JetStream context.
func (c *Client) JetStream() jetstream.JetStream { return c.js }

// Subjects returns the client's subjects.
func (c *Client) Subjects() Subjects { return c.subjects }

// Handlers receive a job's events as they arrive.
type Handlers struct {
	// Output gets stdout and stderr bytes in the order the code wrote them.
	Output func(kind EventKind, data []byte)
	// Trace gets trace events.
	Trace func(TraceEvent)
	// Attempt is called when the job is restarted on another worker after
	// its first worker died: output starts over.
	Attempt func(attempt int, worker string)
}

// Submission is the server's acknowledgement of a job.
type Submission struct {
	ID string
	// Duplicate is true when the server had the id already (within its
	// deduplication window) and dropped this copy.
	Duplicate bool
	Sequence  uint64
}

// Submit publishes job on queue, for the client's tenant, and returns once the jobs stream has
// stored it. An empty job.ID is replaced by a new UUID. A submission the
// server drops as a duplicate is checked against the message that holds
// the id: if that is not this job, Submit fails with ErrIDTaken rather
// than let the caller wait for somebody else's result (or for none).
// Publications that fail for a reason a retry can mend are retried with
// backoff, under the same message id, for the client's retry budget
// (WithSubmitRetry); then Submit returns a *SubmitError (ErrNotAccepted).
func (c *Client) Submit(ctx context.Context, queue string, job *Job) (_ *Submission, err error) {
	if job.ID == "" {
		job.ID = uuid.NewString()
	}
	if job.V == 0 {
		job.V = Version
	}
	if !ValidToken(job.ID) {
		return nil, fmt.Errorf("%w: %q", ErrInvalidID, job.ID)
	}
	if job.Tenant != "" && job.Tenant != c.tenant {
		return nil, fmt.Errorf("%w: the job names tenant %q, the client submits for %q", ErrTenantMismatch, job.Tenant, c.tenant)
	}
	data, err := json.Marshal(job)
	if err != nil {
		return nil, err
	}
	msg := &nats.Msg{Subject: c.subjects.Jobs(queue, c.tenant), Data: data, Header: nats.Header{}}
	msg.Header.Set(HeaderMsgID, MsgID(c.tenant, job.ID))
	if c.onPublish != nil {
		done := c.onPublish(ctx, msg, job.ID)
		defer func() { done(err) }()
	}
	ack, attempts, err := c.publish(ctx, msg, job.ID)
	if err != nil {
		return nil, err
	}
	if ack.Duplicate && attempts > 1 {
		// Most likely the copy an earlier attempt stored, its
		// confirmation lost: the byte-for-byte check tells.
		if err := c.checkClaim(ctx, job.ID, ack.Sequence, data); err != nil {
			return nil, err
		}
		return &Submission{ID: job.ID, Sequence: ack.Sequence}, nil
	}
	if ack.Duplicate {
		if err := c.checkClaim(ctx, job.ID, ack.Sequence, data); err != nil {
			return nil, err
		}
	}
	return &Submission{ID: job.ID, Duplicate: ack.Duplicate, Sequence: ack.Sequence}, nil
}

// publish publishes a job message, retrying what a retry can mend with
// backoff for the client's retry budget. It returns the ack and the
// number of attempts.
func (c *Client) publish(ctx context.Context, msg *nats.Msg, id string) (*jetstream.PubAck, int, error) {
	start := time.Now()
	wait := 100 * time.Millisecond
	for attempt := 1; ; attempt++ {
		// One attempt waits for its ack at most what is left of the
		// budget (and the usual JetStream timeout).
		actx, cancel := context.WithTimeout(ctx, min(max(c.retry-time.Since(start), submitAttemptMin), submitAttemptMax))
		ack, err := c.js.PublishMsg(actx, msg, jetstream.WithExpectStream(c.subjects.JobsStream()))
		cancel()
		switch {
		case err == nil:
			return ack, attempt, nil
		case strings.Contains(err.Error(), "maximum messages per subject exceeded"):
			// the server's ErrMaxMsgsPerSubject, which has no code of its own
			return nil, attempt, fmt.Errorf("%w: job %s: %w", ErrQueueFull, id, err)
		case (errors.Is(err, jetstream.ErrNoStreamResponse) || errors.Is(err, nats.ErrNoResponders)) && c.noStreams(ctx):
			return nil, attempt, fmt.Errorf("%w: %w", ErrNoStreams, err)
		case !retryablePublish(err):
			return nil, attempt, fmt.Errorf("jobs: publishing job %s: %w", id, err)
		}
		elapsed := time.Since(start)
		if ctx.Err() != nil || elapsed+wait > c.retry {
			return nil, attempt, &SubmitError{ID: id, Attempts: attempt, Elapsed: elapsed, Err: err}
		}
		// Jitter spreads the retries of many submitters after a failover.
		sleep := wait/2 + rand.N(wait/2+1)
		select {
		case <-time.After(sleep):
		case <-ctx.Done():
			return nil, attempt, &SubmitError{ID: id, Attempts: attempt, Elapsed: time.Since(start), Err: err}
		}
		wait = min(wait*2, 2*time.Second)
	}
}

// Bounds of one publication attempt's wait for its ack.
const (
	submitAttemptMin = 250 * time.Millisecond
	submitAttemptMax = 5 * time.Second
)

// noStreams reports whether the jobs stream certainly does not exist
// (rather than having no leader for a moment).
func (c *Client) noStreams(ctx context.Context) bool {
	_, err := c.js.Stream(ctx, c.subjects.JobsStream())
	return errors.Is(err, jetstream.ErrStreamNotFound)
}

// retryablePublish reports whether a failed publication may succeed if
// tried again: the stream was unreachable or leaderless for a moment.
func retryablePublish(err error) bool {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		// 503: JetStream not available (no leader, no quorum); 408: a
		// server-side timeout.
		return apiErr.Code == 503 || apiErr.Code == 408
	}
	return errors.Is(err, nats.ErrTimeout) || errors.Is(err, context.DeadlineExceeded) ||
		errors.Is(err, nats.ErrNoResponders) || errors.Is(err, jetstream.ErrNoStreamResponse) ||
		errors.Is(err, nats.ErrConnectionReconnecting) || errors.Is(err, nats.ErrDisconnected) ||
		errors.Is(err, nats.ErrReconnectBufExceeded)
}

// checkClaim verifies that the message a duplicate ack points at (seq) is
// this job. While that message is queued or running it is compared byte
// for byte; once it is gone (workers ack only after the result is out),
// the id must have a result. A check that cannot be made (no permission
// to read the jobs stream, say) is not an error: the caller waits as
// before.
func (c *Client) checkClaim(ctx context.Context, id string, seq uint64, data []byte) error {
	stream, err := c.js.Stream(ctx, c.subjects.JobsStream())
	if err != nil {
		return nil //nolint:nilerr // cannot check: fall back to waiting
	}
	orig, err := stream.GetMsg(ctx, seq)
	switch {
	case err == nil:
		if orig.Header.Get(HeaderMsgID) == MsgID(c.tenant, id) && bytes.Equal(orig.Data, data) {
			return nil
		}
		return fmt.Errorf("%w: job %s (message %d)", ErrIDTaken, id, seq)
	case errors.Is(err, jetstream.ErrMsgNotFound):
		if _, err := c.Lookup(ctx, id); errors.Is(err, ErrNoResult) {
			return fmt.Errorf("%w: job %s (message %d was answered under another id)", ErrIDTaken, id, seq)
		}
		return nil
	default:
		return nil
	}
}

// watchInactiveThreshold is how long the server keeps a watch's consumer
// after its client went away.
const watchInactiveThreshold = 15 * time.Second

// Watch follows one job's events and result, from the first event the
// events stream still has. Create it before submitting the job to miss
// nothing.
type Watch struct {
	c       *Client
	id      string
	events  jetstream.MessagesContext
	results jetstream.MessagesContext
}

// Watch starts following job id: it replays the events and results
// streams from their beginning for that job, then follows them live.
func (c *Client) Watch(ctx context.Context, id string) (*Watch, error) {
	if !ValidToken(id) {
		return nil, fmt.Errorf("%w: %q", ErrInvalidID, id)
	}
	events, err := c.follow(ctx, c.subjects.EventsStream(), c.subjects.JobEvents(c.tenant, id))
	if err != nil {
		return nil, fmt.Errorf("jobs: following job %s: %w", id, err)
	}
	results, err := c.follow(ctx, c.subjects.ResultsStream(), c.subjects.Event(c.tenant, id, EventResult))
	if err != nil {
		events.Stop()
		return nil, fmt.Errorf("jobs: following job %s: %w", id, err)
	}
	return &Watch{c: c, id: id, events: events, results: results}, nil
}

// follow replays and follows one subject filter of a stream.
func (c *Client) follow(ctx context.Context, stream, filter string) (jetstream.MessagesContext, error) {
	cons, err := c.js.OrderedConsumer(ctx, stream, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{filter},
		DeliverPolicy:  jetstream.DeliverAllPolicy,
		// Each watch leaves ephemeral consumers on the server; a short
		// threshold keeps thousands of finished ones from piling up (an
		// active watch always has a pull pending, so it is never idle).
		InactiveThreshold: watchInactiveThreshold,
	})
	if err != nil {
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			return nil, ErrNoStreams
		}
		return nil, err
	}
	return cons.Messages()
}

// Stop ends the watch.
func (w *Watch) Stop() {
	w.events.Stop()
	w.results.Stop()
}

// watchItem is a message from one of the watch's two streams.
type watchItem struct {
	msg    jetstream.Msg
	result bool
	err    error
}

// attemptFilter decides which events belong to the attempt being followed.
// Event headers are claims of whoever published them, so an attempt is
// followed only from its first event (Eryx-Seq 1), only from the worker
// that published that event, and only up to the workers' MaxDeliver; the
// result then says which attempt really finished.
type attemptFilter struct {
	max     int
	attempt int
	worker  string
	locked  bool // the result named the attempt: no more switching
}

// accept reports whether an event is delivered, and whether it starts a
// new attempt (output starts over).
func (f *attemptFilter) accept(h nats.Header) (ok, restart bool) {
	a, err := strconv.Atoi(h.Get(HeaderAttempt))
	if err != nil || a < 1 || a > f.max {
		return false, false
	}
	worker := h.Get(HeaderWorker)
	switch {
	case a == f.attempt:
		return worker == f.worker, false
	case a < f.attempt || f.locked:
		return false, false
	case h.Get(HeaderSeq) != "1":
		return false, false
	}
	restart = f.attempt > 0
	f.attempt, f.worker = a, worker
	return true, restart
}

// Wait delivers events to h until the job's result, which it returns.
// Live, it follows the newest attempt whose first event it saw (see
// attemptFilter): older attempts come from a worker that stalled and lost
// the job. When the result arrives, the events stored before it are
// delivered too; if the result was produced by another attempt or worker
// than the one followed (a forged event had taken over, say), h.Attempt
// is called and that attempt's events are replayed from the start.
func (w *Watch) Wait(ctx context.Context, h Handlers) (*Result, error) {
	stop := context.AfterFunc(ctx, w.Stop)
	defer stop()
	defer w.Stop()
	done := make(chan struct{})
	defer close(done)
	items := make(chan watchItem)
	pump := func(it jetstream.MessagesContext, result bool) {
		for {
			msg, err := it.Next()
			select {
			case items <- watchItem{msg: msg, result: result, err: err}:
			case <-done:
				return
			}
			if err != nil {
				return
			}
		}
	}
	go pump(w.events, false)
	go pump(w.results, true)

	f := &attemptFilter{max: max(w.c.maxAttempts, 1)}
	var (
		res    *Result
		target uint64 // after the result: the last event stored before it
		seen   uint64 // stream sequence of the last event read
	)
	for res == nil || seen < target {
		var it watchItem
		select {
		case it = <-items:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		if it.err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			return nil, fmt.Errorf("jobs: following job %s: %w", w.id, it.err)
		}
		kind := EventKind(lastToken(it.msg.Subject()))
		if it.result || kind == EventResult {
			if res != nil {
				continue
			}
			r, err := decodeResult(w.id, it.msg.Data())
			if err != nil {
				return nil, err
			}
			if !it.result {
				// A result in the events stream (an older worker's):
				// everything before it was delivered already.
				return r, nil
			}
			res = r
			if target, err = w.lastEvent(ctx); err != nil {
				return nil, err
			}
			if res.Status != StatusRejected && (res.Attempt != f.attempt || res.Worker != f.worker) {
				if err := w.replay(ctx, h, f, res, target); err != nil {
					return nil, err
				}
				return res, nil
			}
			f.locked = true
			continue
		}
		if meta, err := it.msg.Metadata(); err == nil {
			seen = meta.Sequence.Stream
		}
		if res != nil && seen > target {
			break
		}
		w.deliver(h, f, kind, it.msg)
	}
	return res, nil
}

// deliver hands one event to h if the filter accepts it.
func (w *Watch) deliver(h Handlers, f *attemptFilter, kind EventKind, msg jetstream.Msg) {
	ok, restart := f.accept(msg.Headers())
	if !ok {
		return
	}
	if restart && h.Attempt != nil {
		h.Attempt(f.attempt, f.worker)
	}
	switch kind {
	case EventStdout, EventStderr:
		if h.Output != nil {
			h.Output(kind, msg.Data())
		}
	case EventTrace:
		if h.Trace != nil {
			var ev TraceEvent
			if json.Unmarshal(msg.Data(), &ev) == nil {
				h.Trace(ev)
			}
		}
	}
}

// lastEvent is the stream sequence of the job's last stored event (0 if
// none). Workers make sure their events are stored before the result, so
// once the result is in, this bounds what is left to deliver.
func (w *Watch) lastEvent(ctx context.Context) (uint64, error) {
	stream, err := w.c.js.Stream(ctx, w.c.subjects.EventsStream())
	if err != nil {
		return 0, fmt.Errorf("jobs: following job %s: %w", w.id, err)
	}
	msg, err := stream.GetLastMsgForSubject(ctx, w.c.subjects.JobEvents(w.c.tenant, w.id))
	switch {
	case errors.Is(err, jetstream.ErrMsgNotFound):
		return 0, nil
	case err != nil:
		return 0, fmt.Errorf("jobs: following job %s: %w", w.id, err)
	}
	return msg.Sequence, nil
}

// replay delivers, from the start, the events of the attempt that
// produced res, up to the event stream sequence target.
func (w *Watch) replay(ctx context.Context, h Handlers, f *attemptFilter, res *Result, target uint64) error {
	if f.attempt > 0 && h.Attempt != nil {
		h.Attempt(res.Attempt, res.Worker)
	}
	*f = attemptFilter{max: max(f.max, res.Attempt), attempt: res.Attempt, worker: res.Worker, locked: true}
	if target == 0 {
		return nil
	}
	it, err := w.c.follow(ctx, w.c.subjects.EventsStream(), w.c.subjects.JobEvents(w.c.tenant, w.id))
	if err != nil {
		return fmt.Errorf("jobs: replaying job %s: %w", w.id, err)
	}
	defer it.Stop()
	stop := context.AfterFunc(ctx, it.Stop)
	defer stop()
	for {
		msg, err := it.Next()
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("jobs: replaying job %s: %w", w.id, err)
		}
		meta, err := msg.Metadata()
		if err != nil || meta.Sequence.Stream > target {
			return nil
		}
		w.deliver(h, f, EventKind(lastToken(msg.Subject())), msg)
		if meta.Sequence.Stream == target {
			return nil
		}
	}
}

func decodeResult(id string, data []byte) (*Result, error) {
	var res Result
	if err := json.Unmarshal(data, &res); err != nil {
		return nil, fmt.Errorf("jobs: unreadable result of job %s: %w", id, err)
	}
	return &res, nil
}

// Run submits job and follows it to its result. If the id ran before, the
// earlier run's events and result are replayed instead.
func (c *Client) Run(ctx context.Context, queue string, job *Job, h Handlers) (*Result, error) {
	if job.ID == "" {
		job.ID = uuid.NewString()
	}
	watch, err := c.Watch(ctx, job.ID)
	if err != nil {
		return nil, err
	}
	defer watch.Stop()
	if _, err := c.Submit(ctx, queue, job); err != nil {
		return nil, err
	}
	return watch.Wait(ctx, h)
}

// Cancel asks for job id to be cancelled, whether it is queued or running.
// The request is stored, so a worker that fetches the job later skips it.
// Cancelling twice, or a finished job, is harmless.
func (c *Client) Cancel(ctx context.Context, id, reason string) error {
	if !ValidToken(id) {
		return fmt.Errorf("%w: %q", ErrInvalidID, id)
	}
	data, _ := json.Marshal(CancelRequest{V: Version, Reason: reason})
	_, err := c.js.Publish(ctx, c.subjects.Cancel(c.tenant, id), data)
	if err != nil {
		if errors.Is(err, jetstream.ErrNoStreamResponse) || errors.Is(err, nats.ErrNoResponders) {
			return fmt.Errorf("%w: %w", ErrNoStreams, err)
		}
		return fmt.Errorf("jobs: cancelling %s: %w", id, err)
	}
	return nil
}

// Lookup returns the result of the client's tenant's job id, or
// ErrNoResult.
func (c *Client) Lookup(ctx context.Context, id string) (*Result, error) {
	if !ValidToken(id) {
		return nil, fmt.Errorf("%w: %q", ErrInvalidID, id)
	}
	stream, err := c.js.Stream(ctx, c.subjects.ResultsStream())
	if err != nil {
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			return nil, ErrNoStreams
		}
		return nil, err
	}
	// The last message on the subject, by direct get: the subject is in
	// the request's subject, which the submitter's permissions scope to
	// its tenant (a get by sequence carries it in the payload, which they
	// cannot see). Workers publish results with a compare-and-set, so the
	// subject's last message is its only one.
	msg, err := stream.GetLastMsgForSubject(ctx, c.subjects.Event(c.tenant, id, EventResult))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, ErrNoResult
	}
	if err != nil {
		return nil, err
	}
	return decodeResult(id, msg.Data)
}

// FirstResult reads the first message on a result subject of the results
// stream: the one the workers' compare-and-set let through. It needs a
// get by sequence, which only workers are allowed (submitters use
// Lookup).
func FirstResult(ctx context.Context, results jetstream.Stream, subject string) (*jetstream.RawStreamMsg, error) {
	return results.GetMsg(ctx, 1, jetstream.WithGetMsgSubject(subject))
}
