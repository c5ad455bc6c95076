package telemetry

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"
	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
)

// runNATS starts an embedded NATS server with JetStream on a free loopback
// port for the duration of the test.
func runNATS(t *testing.T) *nats.Conn {
	t.Helper()
	srv, err := server.NewServer(&server.Options{
		Host:      "127.0.0.1",
		Port:      -1,
		JetStream: true,
		StoreDir:  t.TempDir(),
		NoLog:     true,
		NoSigs:    true,
	})
	if err != nil {
		t.Fatalf("nats server: %v", err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats server not ready")
	}
	t.Cleanup(func() {
		srv.Shutdown()
		srv.WaitForShutdown()
	})
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// inMemory sets up a process's tracing with an in-memory exporter, standing
// in for one of the three processes a job's trace crosses.
func inMemory(t *testing.T, service string) (*Telemetry, *tracetest.InMemoryExporter) {
	t.Helper()
	exp := tracetest.NewInMemoryExporter()
	tel, err := Setup(context.Background(), Options{ServiceName: service, Exporter: exp, Sync: true})
	if err != nil {
		t.Fatalf("setup %s: %v", service, err)
	}
	t.Cleanup(func() { _ = tel.Shutdown(context.Background()) })
	return tel, exp
}

func spanNamed(t *testing.T, spans tracetest.SpanStubs, name string) tracetest.SpanStub {
	t.Helper()
	for _, s := range spans {
		if s.Name == name {
			return s
		}
	}
	var names []string
	for _, s := range spans {
		names = append(names, s.Name)
	}
	t.Fatalf("no span %q among %q", name, names)
	return tracetest.SpanStub{}
}

func attrMap(kvs []attribute.KeyValue) map[attribute.Key]attribute.Value {
	m := make(map[attribute.Key]attribute.Value, len(kvs))
	for _, kv := range kvs {
		m[kv.Key] = kv.Value
	}
	return m
}

func wantAttrs(t *testing.T, s tracetest.SpanStub, want map[string]any) {
	t.Helper()
	got := attrMap(s.Attributes)
	for k, v := range want {
		g, ok := got[attribute.Key(k)]
		if !ok {
			t.Errorf("span %q: no attribute %s", s.Name, k)
			continue
		}
		if g.AsInterface() != v {
			t.Errorf("span %q: %s = %v, want %v", s.Name, k, g.AsInterface(), v)
		}
	}
}

func wantChild(t *testing.T, child, parent tracetest.SpanStub, remote bool) {
	t.Helper()
	if child.SpanContext.TraceID() != parent.SpanContext.TraceID() {
		t.Errorf("span %q: trace %s, want %s (the trace of %q)", child.Name,
			child.SpanContext.TraceID(), parent.SpanContext.TraceID(), parent.Name)
	}
	if child.Parent.SpanID() != parent.SpanContext.SpanID() {
		t.Errorf("span %q: parent %s, want %q (%s)", child.Name,
			child.Parent.SpanID(), parent.Name, parent.SpanContext.SpanID())
	}
	if child.Parent.IsRemote() != remote {
		t.Errorf("span %q: parent remote = %v, want %v", child.Name, child.Parent.IsRemote(), remote)
	}
}

// TestJobTraceAcrossNATS follows one job through a real JetStream stream
// and a real NATS micro callback service: submit → queue → worker →
// callback, each side with its own tracer provider so that only the NATS
// headers can connect their spans.
func TestJobTraceAcrossNATS(t *testing.T) {
	const (
		subject  = "eryx.jobs.default"
		cbSubj   = "eryx.cb.echo"
		jobID    = "job-42"
		consumer = "workers"
	)
	tests := []struct {
		name          string
		workerTracing bool // false: the worker runs with tracing off
	}{
		{"worker traced", true},
		{"worker untraced passes context through", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			nc := runNATS(t)

			submitTel, submitExp := inMemory(t, "eryx-submit")
			cbTel, cbExp := inMemory(t, "callback-service")
			var workerTel *Telemetry
			workerExp := tracetest.NewInMemoryExporter()
			if tc.workerTracing {
				workerTel, workerExp = inMemory(t, "eryx-worker")
			} else {
				off, err := Setup(ctx, Options{Getenv: func(string) string { return "" }})
				if err != nil {
					t.Fatal(err)
				}
				if off.Enabled() {
					t.Fatal("tracing on with an empty environment")
				}
				workerTel = off
			}

			// The callback service, as a NATS micro service.
			svc, err := micro.AddService(nc, micro.Config{Name: "echo", Version: "1.0.0"})
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = svc.Stop() }()
			err = svc.AddEndpoint("echo", micro.HandlerFunc(func(req micro.Request) {
				_, span := cbTel.StartServe(context.Background(), "echo", req.Subject(), nats.Header(req.Headers()))
				defer span.End()
				_ = req.Respond(req.Data())
			}), micro.WithEndpointSubject(cbSubj))
			if err != nil {
				t.Fatal(err)
			}

			js, err := jetstream.New(nc)
			if err != nil {
				t.Fatal(err)
			}
			stream, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "JOBS", Subjects: []string{"eryx.jobs.>"}})
			if err != nil {
				t.Fatal(err)
			}
			cons, err := stream.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{Durable: consumer, AckPolicy: jetstream.AckExplicitPolicy})
			if err != nil {
				t.Fatal(err)
			}

			// Submit.
			msg := nats.NewMsg(subject)
			msg.Data = []byte(`print("hi")`)
			msg.Header.Set(jetstream.MsgIDHeader, jobID)
			pctx, pspan := submitTel.StartPublish(ctx, msg, jobID)
			_, err = js.PublishMsg(pctx, msg)
			EndSpan(pspan, err)
			if err != nil {
				t.Fatal(err)
			}
			if msg.Header.Get("traceparent") == "" {
				t.Fatalf("no traceparent injected: %v", msg.Header)
			}

			// Worker: fetch, process, invoke the callback.
			batch, err := cons.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
			if err != nil {
				t.Fatal(err)
			}
			var got jetstream.Msg
			for m := range batch.Messages() {
				got = m
			}
			if got == nil {
				t.Fatalf("no message fetched: %v", batch.Error())
			}
			meta, err := got.Metadata()
			if err != nil {
				t.Fatal(err)
			}
			wctx, wspan := workerTel.StartProcess(ctx, Message{
				Subject:       got.Subject(),
				ID:            got.Headers().Get(jetstream.MsgIDHeader),
				BodySize:      len(got.Data()),
				ConsumerGroup: consumer,
				Header:        got.Headers(),
				Enqueued:      meta.Timestamp,
			})
			req := nats.NewMsg(cbSubj)
			req.Data = []byte("ping")
			cctx, cspan := workerTel.StartCallback(wctx, "echo", req)
			resp, err := nc.RequestMsgWithContext(cctx, req)
			EndSpan(cspan, err)
			if err != nil {
				t.Fatal(err)
			}
			if string(resp.Data) != "ping" {
				t.Fatalf("callback answered %q", resp.Data)
			}
			wspan.End()
			if err := got.Ack(); err != nil {
				t.Fatal(err)
			}
			_ = svc.Stop() // waits for the handler, so its span has ended

			pub := spanNamed(t, submitExp.GetSpans(), "send "+subject)
			if pub.SpanKind != trace.SpanKindProducer || pub.Parent.IsValid() {
				t.Errorf("publish span: kind %v parent %v, want a producer root", pub.SpanKind, pub.Parent)
			}
			wantAttrs(t, pub, map[string]any{
				"messaging.system":            "nats",
				"messaging.operation.type":    "send",
				"messaging.destination.name":  subject,
				"messaging.message.id":        jobID,
				"messaging.message.body.size": int64(len(msg.Data)),
			})
			serve := spanNamed(t, cbExp.GetSpans(), "callback echo")
			if serve.SpanKind != trace.SpanKindServer {
				t.Errorf("callback service span kind %v, want server", serve.SpanKind)
			}

			if !tc.workerTracing {
				if n := len(workerExp.GetSpans()); n != 0 {
					t.Errorf("untraced worker exported %d spans", n)
				}
				// The service's span still joins the submitter's trace.
				wantChild(t, serve, pub, true)
				return
			}

			spans := workerExp.GetSpans()
			recv := spanNamed(t, spans, "receive "+subject)
			proc := spanNamed(t, spans, "process "+subject)
			call := spanNamed(t, spans, "callback echo")

			wantChild(t, recv, pub, true)
			wantChild(t, proc, pub, true)
			wantChild(t, call, proc, false)
			wantChild(t, serve, call, true)

			for _, c := range []struct {
				span tracetest.SpanStub
				kind trace.SpanKind
				op   string
			}{
				{recv, trace.SpanKindConsumer, "receive"},
				{proc, trace.SpanKindConsumer, "process"},
				{call, trace.SpanKindClient, "send"},
			} {
				if c.span.SpanKind != c.kind {
					t.Errorf("span %q kind %v, want %v", c.span.Name, c.span.SpanKind, c.kind)
				}
				wantAttrs(t, c.span, map[string]any{"messaging.system": "nats", "messaging.operation.type": c.op})
			}
			wantAttrs(t, proc, map[string]any{
				"messaging.destination.name":    subject,
				"messaging.message.id":          jobID,
				"messaging.consumer.group.name": consumer,
				"messaging.message.body.size":   int64(len(msg.Data)),
			})
			wantAttrs(t, call, map[string]any{string(CallbackNameKey): "echo", "messaging.destination.name": cbSubj})

			// The receive span is the queue wait: from the JetStream timestamp
			// until processing started.
			if !recv.StartTime.Equal(meta.Timestamp) || recv.EndTime.Before(recv.StartTime) {
				t.Errorf("queue wait span %v..%v, want from the enqueue time %v", recv.StartTime, recv.EndTime, meta.Timestamp)
			}
			if recv.EndTime.After(proc.StartTime) {
				t.Errorf("queue wait ends %v after processing starts", recv.EndTime.Sub(proc.StartTime))
			}
			if rs := recvResource(proc); rs != "eryx-worker" {
				t.Errorf("worker span service.name = %q", rs)
			}
		})
	}
}

func recvResource(s tracetest.SpanStub) string {
	if s.Resource == nil {
		return ""
	}
	v, _ := s.Resource.Set().Value("service.name")
	return v.AsString()
}

func TestHeaderCarrier(t *testing.T) {
	tests := []struct {
		name   string
		header nats.Header
		key    string
		want   string
	}{
		{"exact", nats.Header{"traceparent": {"a"}}, "traceparent", "a"},
		{"other case", nats.Header{"Traceparent": {"b"}}, "traceparent", "b"},
		{"exact wins", nats.Header{"TRACEPARENT": {"x"}, "traceparent": {"c"}}, "traceparent", "c"},
		{"missing", nats.Header{"other": {"d"}}, "traceparent", ""},
		{"empty values", nats.Header{"traceparent": {}}, "traceparent", ""},
		{"nil header", nil, "traceparent", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := HeaderCarrier(tc.header).Get(tc.key); got != tc.want {
				t.Errorf("Get(%q) = %q, want %q", tc.key, got, tc.want)
			}
		})
	}

	h := nats.Header{"Traceparent": {"stale"}, "Nats-Msg-Id": {"job"}}
	HeaderCarrier(h).Set("traceparent", "fresh")
	if len(h) != 2 || h.Get("traceparent") != "fresh" || h.Get("Nats-Msg-Id") != "job" {
		t.Errorf("Set left %v", h)
	}
	if keys := HeaderCarrier(h).Keys(); len(keys) != 2 {
		t.Errorf("Keys = %v", keys)
	}
}

// TestInjectExtractRoundTrip checks the propagation helpers without a
// server, for every way a caller may hold Telemetry.
func TestInjectExtractRoundTrip(t *testing.T) {
	traced, _ := inMemory(t, "t")
	off, err := Setup(context.Background(), Options{Getenv: func(string) string { return "" }})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		tel  *Telemetry
	}{
		{"traced", traced},
		{"off", off},
		{"nil", nil},
	}
	// A remote parent, as if received from an upstream service.
	parent := sdktrace.NewTracerProvider()
	defer func() { _ = parent.Shutdown(context.Background()) }()
	pctx, pspan := parent.Tracer("upstream").Start(context.Background(), "upstream")
	defer pspan.End()

	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := nats.Header{}
			tc.tel.Inject(pctx, h)
			got := trace.SpanContextFromContext(tc.tel.Extract(context.Background(), h))
			if got.TraceID() != pspan.SpanContext().TraceID() || got.SpanID() != pspan.SpanContext().SpanID() || !got.IsRemote() {
				t.Errorf("extracted %v, want remote %v", got, pspan.SpanContext())
			}

			// A publish under that context continues the same trace.
			msg := &nats.Msg{Subject: "s"} // nil Header: StartPublish makes one
			_, span := tc.tel.StartPublish(pctx, msg, "id")
			span.End()
			sc := trace.SpanContextFromContext(tc.tel.Extract(context.Background(), msg.Header))
			if sc.TraceID() != pspan.SpanContext().TraceID() {
				t.Errorf("publish header carries trace %s, want %s", sc.TraceID(), pspan.SpanContext().TraceID())
			}
		})
	}
}
