package telemetry

import (
	"context"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
)

// HeaderCarrier adapts nats.Header to propagation.TextMapCarrier.
//
// NATS header keys are case-sensitive while HTTP's (and so the W3C spec's)
// are not. Injection writes the lowercase names the W3C propagator uses;
// extraction falls back to a case-insensitive match so a producer that wrote
// "Traceparent" (say, through an HTTP-style canonicalising client) still
// joins the trace.
//
// A nil HeaderCarrier can be read but not written: give Inject a non-nil
// header (nats.NewMsg makes one).
type HeaderCarrier nats.Header

var _ propagation.TextMapCarrier = HeaderCarrier(nil)

// Get returns the first value of key.
func (c HeaderCarrier) Get(key string) string {
	if v := c[key]; len(v) > 0 {
		return v[0]
	}
	for k, v := range c {
		if len(v) > 0 && strings.EqualFold(k, key) {
			return v[0]
		}
	}
	return ""
}

// Set replaces key's values with value.
func (c HeaderCarrier) Set(key, value string) {
	// Drop differently-cased duplicates so a re-injected header never
	// carries two conflicting traceparents.
	for k := range c {
		if k != key && strings.EqualFold(k, key) {
			delete(c, k)
		}
	}
	c[key] = []string{value}
}

// Keys lists the header names.
func (c HeaderCarrier) Keys() []string {
	keys := make([]string, 0, len(c))
	for k := range c {
		keys = append(keys, k)
	}
	return keys
}

// Inject writes ctx's trace context into hdr, which must not be nil.
func (t *Telemetry) Inject(ctx context.Context, hdr nats.Header) {
	t.propagator().Inject(ctx, HeaderCarrier(hdr))
}

// Extract returns ctx carrying the remote trace context found in hdr (ctx
// unchanged when hdr has none). For a micro.Request use
// nats.Header(req.Headers()).
func (t *Telemetry) Extract(ctx context.Context, hdr nats.Header) context.Context {
	return t.propagator().Extract(ctx, HeaderCarrier(hdr))
}

// messagingSystem is the messaging.system value. NATS is not (yet) one of the
// well-known values in the conventions, which allow any lowercase name.
const messagingSystem = "nats"

// CallbackNameKey names the callback a callback span is about.
const CallbackNameKey = attribute.Key("eryx.callback.name")

// Message describes a NATS message for the attributes of its spans.
type Message struct {
	// Subject is the subject published to or consumed from
	// (messaging.destination.name).
	Subject string
	// ID is the message's identity (messaging.message.id), e.g. the job ID
	// or the JetStream Nats-Msg-Id used for de-duplication.
	ID string
	// BodySize is the payload length in bytes (messaging.message.body.size);
	// negative means unknown.
	BodySize int
	// ConsumerGroup is the JetStream durable consumer or queue group
	// (messaging.consumer.group.name), consumers only.
	ConsumerGroup string
	// Header carries the producer's trace context, consumers only.
	Header nats.Header
	// Enqueued is when the server stored the message (JetStream metadata
	// Timestamp), consumers only. When set, StartProcess records the time
	// the message waited as a "receive" span.
	Enqueued time.Time
}

func (m Message) attrs(op attribute.KeyValue, opName string) []attribute.KeyValue {
	attrs := []attribute.KeyValue{
		semconv.MessagingSystemKey.String(messagingSystem),
		op,
		semconv.MessagingOperationName(opName),
		semconv.MessagingDestinationName(m.Subject),
	}
	if m.ID != "" {
		attrs = append(attrs, semconv.MessagingMessageID(m.ID))
	}
	if m.BodySize >= 0 {
		attrs = append(attrs, semconv.MessagingMessageBodySize(m.BodySize))
	}
	if m.ConsumerGroup != "" {
		attrs = append(attrs, semconv.MessagingConsumerGroupName(m.ConsumerGroup))
	}
	return attrs
}

// start starts a span, building its name and attributes only when tracing
// is on: with tracing off the no-op tracer just hands back the parent's span
// context, so a trace still flows through this process at almost no cost.
func (t *Telemetry) start(ctx context.Context, op, target string, kind trace.SpanKind, attrs func() []attribute.KeyValue, opts ...trace.SpanStartOption) (context.Context, trace.Span) {
	if !t.Enabled() {
		return t.Tracer().Start(ctx, op)
	}
	opts = append(opts, trace.WithSpanKind(kind), trace.WithAttributes(attrs()...))
	return t.tracer.Start(ctx, op+" "+target, opts...)
}

// StartPublish starts the producer span for publishing msg (a job
// submission) and injects its context into msg.Header, creating the header
// if needed. id is the message ID (the job ID); End the span once the publish
// is acknowledged, with EndSpan to record a failure.
func (t *Telemetry) StartPublish(ctx context.Context, msg *nats.Msg, id string) (context.Context, trace.Span) {
	// "send" is the conventions' current name for what older versions
	// called "publish".
	ctx, span := t.start(ctx, "send", msg.Subject, trace.SpanKindProducer, func() []attribute.KeyValue {
		m := Message{Subject: msg.Subject, ID: id, BodySize: len(msg.Data)}
		return m.attrs(semconv.MessagingOperationTypeSend, "send")
	})
	if msg.Header == nil {
		msg.Header = nats.Header{}
	}
	t.Inject(ctx, msg.Header)
	return ctx, span
}

// StartProcess starts the consumer span for processing a received message
// (a worker executing a job), as a child of the producer's span found in
// m.Header. If m.Enqueued is set it first records a "receive" span, also a
// child of the producer, that covers the time from enqueueing until now:
// the queue wait, visible on the trace's timeline. End the returned span
// when processing is done.
func (t *Telemetry) StartProcess(ctx context.Context, m Message) (context.Context, trace.Span) {
	parent := t.Extract(ctx, m.Header)
	if !t.Enabled() {
		return t.Tracer().Start(parent, "process")
	}
	now := time.Now()
	if !m.Enqueued.IsZero() {
		start := m.Enqueued
		if start.After(now) {
			// Server and worker clocks differ; never draw a negative wait.
			start = now
		}
		_, wait := t.tracer.Start(parent, "receive "+m.Subject,
			trace.WithSpanKind(trace.SpanKindConsumer),
			trace.WithTimestamp(start),
			trace.WithAttributes(m.attrs(semconv.MessagingOperationTypeReceive, "receive")...),
		)
		wait.End(trace.WithTimestamp(now))
	}
	return t.tracer.Start(parent, "process "+m.Subject,
		trace.WithSpanKind(trace.SpanKindConsumer),
		trace.WithTimestamp(now),
		trace.WithAttributes(m.attrs(semconv.MessagingOperationTypeProcess, "process")...),
	)
}

// StartCallback starts the client span for one callback invocation, a NATS
// request from the worker to a callback service, and injects its context into
// msg.Header so the service's span becomes its child. name is the
// callback's name as the guest code called it.
func (t *Telemetry) StartCallback(ctx context.Context, name string, msg *nats.Msg) (context.Context, trace.Span) {
	ctx, span := t.start(ctx, "callback", name, trace.SpanKindClient, func() []attribute.KeyValue {
		m := Message{Subject: msg.Subject, BodySize: len(msg.Data)}
		return append(m.attrs(semconv.MessagingOperationTypeSend, "request"), CallbackNameKey.String(name))
	})
	if msg.Header == nil {
		msg.Header = nats.Header{}
	}
	t.Inject(ctx, msg.Header)
	return ctx, span
}

// StartServe starts the server span of a callback service handling one
// request, as a child of the caller's span found in hdr (for a micro.Request:
// nats.Header(req.Headers())).
func (t *Telemetry) StartServe(ctx context.Context, name, subject string, hdr nats.Header) (context.Context, trace.Span) {
	return t.start(t.Extract(ctx, hdr), "callback", name, trace.SpanKindServer, func() []attribute.KeyValue {
		m := Message{Subject: subject, BodySize: -1}
		return append(m.attrs(semconv.MessagingOperationTypeProcess, "process"), CallbackNameKey.String(name))
	})
}

// EndSpan ends span, first marking it failed with err if err is not nil.
// Use it in a defer: defer func() { telemetry.EndSpan(span, err) }().
func EndSpan(span trace.Span, err error) {
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}
