package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
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
)

// Client submits jobs and follows their events. It is safe for
// concurrent use.
type Client struct {
	nc        *nats.Conn
	js        jetstream.JetStream
	subjects  Subjects
	onPublish PublishHook
}

// PublishHook is called with each job message before it is published, to
// add headers (the trace context of ctx, say); the returned function gets
// the publication's outcome.
type PublishHook func(ctx context.Context, msg *nats.Msg, id string) func(error)

// ClientOption configures a Client.
type ClientOption func(*Client)

// WithPublishHook installs a PublishHook.
func WithPublishHook(h PublishHook) ClientOption { return func(c *Client) { c.onPublish = h } }

// NewClient returns a client using nc.
func NewClient(nc *nats.Conn, subjects Subjects, opts ...ClientOption) (*Client, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	c := &Client{nc: nc, js: js, subjects: subjects}
	for _, o := range opts {
		o(c)
	}
	return c, nil
}

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

// Submit publishes job on queue and returns once the jobs stream has
// stored it. An empty job.ID is replaced by a new UUID.
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
	data, err := json.Marshal(job)
	if err != nil {
		return nil, err
	}
	msg := &nats.Msg{Subject: c.subjects.Jobs(queue), Data: data, Header: nats.Header{}}
	msg.Header.Set(HeaderMsgID, job.ID)
	if c.onPublish != nil {
		done := c.onPublish(ctx, msg, job.ID)
		defer func() { done(err) }()
	}
	ack, err := c.js.PublishMsg(ctx, msg, jetstream.WithExpectStream(c.subjects.JobsStream()))
	if err != nil {
		if errors.Is(err, jetstream.ErrNoStreamResponse) || errors.Is(err, nats.ErrNoResponders) {
			return nil, fmt.Errorf("%w: %w", ErrNoStreams, err)
		}
		return nil, fmt.Errorf("jobs: publishing job %s: %w", job.ID, err)
	}
	return &Submission{ID: job.ID, Duplicate: ack.Duplicate, Sequence: ack.Sequence}, nil
}

// watchInactiveThreshold is how long the server keeps a watch's consumer
// after its client went away.
const watchInactiveThreshold = 15 * time.Second

// Watch follows one job's events, from the first one the events stream
// still has. Create it before submitting the job to miss nothing.
type Watch struct {
	id   string
	iter jetstream.MessagesContext
}

// Watch starts following job id: it replays the events stream from its
// beginning for that job, then follows it live.
func (c *Client) Watch(ctx context.Context, id string) (*Watch, error) {
	if !ValidToken(id) {
		return nil, fmt.Errorf("%w: %q", ErrInvalidID, id)
	}
	cons, err := c.js.OrderedConsumer(ctx, c.subjects.EventsStream(), jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{c.subjects.JobEvents(id)},
		DeliverPolicy:  jetstream.DeliverAllPolicy,
		// Each watch leaves an ephemeral consumer on the server; a short
		// threshold keeps thousands of finished ones from piling up (an
		// active watch always has a pull pending, so it is never idle).
		InactiveThreshold: watchInactiveThreshold,
	})
	if err != nil {
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			return nil, ErrNoStreams
		}
		return nil, fmt.Errorf("jobs: following job %s: %w", id, err)
	}
	iter, err := cons.Messages()
	if err != nil {
		return nil, fmt.Errorf("jobs: following job %s: %w", id, err)
	}
	return &Watch{id: id, iter: iter}, nil
}

// Stop ends the watch.
func (w *Watch) Stop() { w.iter.Stop() }

// Wait delivers events to h until the job's result, which it returns.
// Output of an attempt older than the newest one seen is dropped: it can
// only come from a worker that stalled and lost the job.
func (w *Watch) Wait(ctx context.Context, h Handlers) (*Result, error) {
	stop := context.AfterFunc(ctx, w.iter.Stop)
	defer stop()
	defer w.iter.Stop()
	attempt := 0
	for {
		msg, err := w.iter.Next()
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			return nil, fmt.Errorf("jobs: following job %s: %w", w.id, err)
		}
		kind := EventKind(lastToken(msg.Subject()))
		if kind == EventResult {
			var res Result
			if err := json.Unmarshal(msg.Data(), &res); err != nil {
				return nil, fmt.Errorf("jobs: unreadable result of job %s: %w", w.id, err)
			}
			return &res, nil
		}
		a, _ := strconv.Atoi(msg.Headers().Get(HeaderAttempt))
		if a < attempt {
			continue
		}
		if a > attempt {
			if attempt > 0 && h.Attempt != nil {
				h.Attempt(a, msg.Headers().Get(HeaderWorker))
			}
			attempt = a
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
	_, err := c.js.Publish(ctx, c.subjects.Cancel(id), data)
	if err != nil {
		if errors.Is(err, jetstream.ErrNoStreamResponse) || errors.Is(err, nats.ErrNoResponders) {
			return fmt.Errorf("%w: %w", ErrNoStreams, err)
		}
		return fmt.Errorf("jobs: cancelling %s: %w", id, err)
	}
	return nil
}

// Lookup returns job id's result, or ErrNoResult.
func (c *Client) Lookup(ctx context.Context, id string) (*Result, error) {
	if !ValidToken(id) {
		return nil, fmt.Errorf("%w: %q", ErrInvalidID, id)
	}
	stream, err := c.js.Stream(ctx, c.subjects.EventsStream())
	if err != nil {
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			return nil, ErrNoStreams
		}
		return nil, err
	}
	msg, err := stream.GetLastMsgForSubject(ctx, c.subjects.Event(id, EventResult))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, ErrNoResult
	}
	if err != nil {
		return nil, err
	}
	var res Result
	if err := json.Unmarshal(msg.Data, &res); err != nil {
		return nil, fmt.Errorf("jobs: unreadable result of job %s: %w", id, err)
	}
	return &res, nil
}
