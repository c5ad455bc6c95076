package telemetry

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// instrumentationName names the tracer scope of every span eryx makes.
const instrumentationName = "github.com/eryx-dev/eryx"

// Options configures Setup. Everything about where spans go comes from the
// standard OTEL_* environment variables; Options only carries what the
// program itself knows.
type Options struct {
	// ServiceName is the service.name resource attribute unless
	// OTEL_SERVICE_NAME (or service.name in OTEL_RESOURCE_ATTRIBUTES) says
	// otherwise, e.g. "eryx-worker".
	ServiceName string
	// ServiceVersion is the service.version resource attribute, if set.
	ServiceVersion string

	// Exporter, when set, replaces the exporter chosen from the environment
	// and switches tracing on regardless of it. Tests pass a
	// tracetest.InMemoryExporter here; a program can pass any exporter.
	Exporter sdktrace.SpanExporter
	// Sync exports each span as it ends instead of in batches. Only
	// sensible with Exporter in tests: it makes spans visible without a
	// flush, at the price of an export call per span.
	Sync bool

	// SetGlobal also installs the tracer provider and propagator as the
	// OpenTelemetry globals, for third-party instrumentation that reads them.
	SetGlobal bool

	// Getenv reads the environment; nil means os.Getenv. It lets tests pick
	// exporters without touching the process environment. The OTLP
	// exporters themselves always read endpoint, headers, TLS and timeouts
	// from the process environment.
	Getenv func(string) string
}

// Telemetry is the tracing half of eryx's observability: a tracer provider
// and the propagator that carries trace context through NATS headers.
// A nil *Telemetry is valid and traces nothing.
type Telemetry struct {
	// TracerProvider makes the spans; a no-op provider when tracing is off.
	TracerProvider trace.TracerProvider
	// Propagator injects and extracts W3C traceparent/tracestate and baggage.
	Propagator propagation.TextMapPropagator

	tracer   trace.Tracer
	shutdown func(context.Context) error
	enabled  bool
}

// Enabled reports whether spans are recorded and exported. When false the
// tracer is a no-op but trace context received in headers is still passed
// on, so a worker without tracing does not break a trace across it.
func (t *Telemetry) Enabled() bool { return t != nil && t.enabled }

// Tracer returns eryx's tracer.
func (t *Telemetry) Tracer() trace.Tracer {
	if t == nil || t.tracer == nil {
		return noop.NewTracerProvider().Tracer(instrumentationName)
	}
	return t.tracer
}

func (t *Telemetry) propagator() propagation.TextMapPropagator {
	if t == nil || t.Propagator == nil {
		return defaultPropagator()
	}
	return t.Propagator
}

// Shutdown flushes buffered spans and stops the exporter. Call it once, with
// a deadline, when the program exits; spans still queued after the deadline
// are dropped.
func (t *Telemetry) Shutdown(ctx context.Context) error {
	if t == nil || t.shutdown == nil {
		return nil
	}
	if err := t.shutdown(ctx); err != nil {
		return fmt.Errorf("telemetry: shutdown: %w", err)
	}
	return nil
}

// ForceFlush exports all ended spans now (a no-op when tracing is off).
func (t *Telemetry) ForceFlush(ctx context.Context) error {
	if t == nil {
		return nil
	}
	if tp, ok := t.TracerProvider.(*sdktrace.TracerProvider); ok {
		if err := tp.ForceFlush(ctx); err != nil {
			return fmt.Errorf("telemetry: flush: %w", err)
		}
	}
	return nil
}

// defaultPropagator is W3C trace context plus baggage: what every
// OpenTelemetry SDK speaks by default, so callback services written in other
// languages join the same trace without configuration.
func defaultPropagator() propagation.TextMapPropagator {
	return propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})
}

// exporterKind is the outcome of reading the OTEL_* variables.
type exporterKind string

const (
	exportNone exporterKind = "none"
	exportHTTP exporterKind = "http/protobuf"
	exportGRPC exporterKind = "grpc"
)

// chooseExporter decides from the environment whether and how to export.
//
// It follows the OpenTelemetry SDK environment specification with one
// deliberate difference: when OTEL_TRACES_EXPORTER is unset and no OTLP
// endpoint is configured, tracing is off rather than aimed at
// localhost:4318. A worker deployed without any OTEL_* configuration should
// not spend CPU building spans nobody collects, nor log export errors.
// Setting OTEL_TRACES_EXPORTER=otlp explicitly keeps the spec's default
// endpoint (for a collector sidecar on localhost).
func chooseExporter(getenv func(string) string) (exporterKind, error) {
	if strings.EqualFold(strings.TrimSpace(getenv("OTEL_SDK_DISABLED")), "true") {
		return exportNone, nil
	}
	explicit := false
	if v := strings.TrimSpace(getenv("OTEL_TRACES_EXPORTER")); v != "" {
		for _, name := range strings.Split(v, ",") {
			switch strings.ToLower(strings.TrimSpace(name)) {
			case "none":
				// "none" wins over anything listed beside it, as in the spec.
				return exportNone, nil
			case "otlp":
				explicit = true
			default:
				return "", fmt.Errorf("telemetry: OTEL_TRACES_EXPORTER=%q: only \"otlp\" and \"none\" are supported", v)
			}
		}
	}
	endpoint := getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != "" || getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != ""
	if !explicit && !endpoint {
		return exportNone, nil
	}
	proto := strings.TrimSpace(getenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"))
	if proto == "" {
		proto = strings.TrimSpace(getenv("OTEL_EXPORTER_OTLP_PROTOCOL"))
	}
	switch strings.ToLower(proto) {
	case "", "http/protobuf":
		return exportHTTP, nil
	case "grpc":
		return exportGRPC, nil
	default:
		return "", fmt.Errorf("telemetry: OTLP protocol %q: use \"http/protobuf\" or \"grpc\"", proto)
	}
}

// Setup builds the tracing pipeline that the environment asks for. With
// tracing off it returns a *Telemetry whose tracer is a no-op, so the caller
// never has to branch. The returned Shutdown must be called to flush spans.
func Setup(ctx context.Context, opts Options) (*Telemetry, error) {
	getenv := opts.Getenv
	if getenv == nil {
		getenv = os.Getenv
	}
	t := &Telemetry{Propagator: defaultPropagator()}

	exporter := opts.Exporter
	if exporter == nil {
		kind, err := chooseExporter(getenv)
		if err != nil {
			return nil, err
		}
		switch kind {
		case exportHTTP:
			// The exporter reads OTEL_EXPORTER_OTLP_[TRACES_]{ENDPOINT,HEADERS,
			// TIMEOUT,COMPRESSION,CERTIFICATE,...} itself. Neither exporter
			// dials here, so Setup never blocks on an absent collector.
			exporter, err = otlptracehttp.New(ctx)
		case exportGRPC:
			exporter, err = otlptracegrpc.New(ctx)
		}
		if err != nil {
			return nil, fmt.Errorf("telemetry: OTLP %s exporter: %w", kind, err)
		}
	}

	if exporter == nil {
		np := noop.NewTracerProvider()
		t.TracerProvider = np
		t.tracer = np.Tracer(instrumentationName)
	} else {
		res, err := newResource(ctx, opts)
		if err != nil {
			_ = exporter.Shutdown(ctx)
			return nil, err
		}
		// The sampler is the SDK default, ParentBased(AlwaysOn), unless
		// OTEL_TRACES_SAMPLER[_ARG] say otherwise: the SDK reads those, and
		// the OTEL_BSP_* batch settings, on its own.
		processor := sdktrace.WithBatcher(exporter)
		if opts.Sync {
			processor = sdktrace.WithSyncer(exporter)
		}
		tp := sdktrace.NewTracerProvider(processor, sdktrace.WithResource(res))
		t.TracerProvider = tp
		t.tracer = tp.Tracer(instrumentationName)
		t.shutdown = tp.Shutdown
		t.enabled = true
	}

	if opts.SetGlobal {
		otel.SetTracerProvider(t.TracerProvider)
		otel.SetTextMapPropagator(t.Propagator)
	}
	return t, nil
}

// newResource describes this process. Attributes from the environment
// (OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES) come last so they override
// the program's defaults.
func newResource(ctx context.Context, opts Options) (*resource.Resource, error) {
	var attrs []attribute.KeyValue
	if opts.ServiceName != "" {
		attrs = append(attrs, attribute.String("service.name", opts.ServiceName))
	}
	if opts.ServiceVersion != "" {
		attrs = append(attrs, attribute.String("service.version", opts.ServiceVersion))
	}
	res, err := resource.New(ctx,
		resource.WithTelemetrySDK(),
		resource.WithHost(),
		resource.WithAttributes(attrs...),
		resource.WithFromEnv(),
	)
	// Partial resources (a detector failed, e.g. no hostname) are still
	// useful: keep them rather than refusing to trace.
	if err != nil && !errors.Is(err, resource.ErrPartialResource) {
		return nil, fmt.Errorf("telemetry: resource: %w", err)
	}
	return res, nil
}
