package telemetry

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
)

func envOf(kv map[string]string) func(string) string {
	return func(k string) string { return kv[k] }
}

func TestChooseExporter(t *testing.T) {
	tests := []struct {
		name    string
		env     map[string]string
		want    exporterKind
		wantErr bool
	}{
		{"nothing set is off", nil, exportNone, false},
		{"endpoint defaults to http", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, exportHTTP, false},
		{"traces endpoint alone", map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"}, exportHTTP, false},
		{"grpc protocol", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, exportGRPC, false},
		{"traces protocol wins", map[string]string{
			"OTEL_EXPORTER_OTLP_ENDPOINT":        "http://c:4317",
			"OTEL_EXPORTER_OTLP_PROTOCOL":        "http/protobuf",
			"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "grpc",
		}, exportGRPC, false},
		{"explicit otlp without endpoint", map[string]string{"OTEL_TRACES_EXPORTER": "otlp"}, exportHTTP, false},
		{"none beats endpoint", map[string]string{"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, exportNone, false},
		{"none in a list", map[string]string{"OTEL_TRACES_EXPORTER": "otlp, none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c"}, exportNone, false},
		{"sdk disabled", map[string]string{"OTEL_SDK_DISABLED": "TRUE", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c"}, exportNone, false},
		{"sdk disabled false", map[string]string{"OTEL_SDK_DISABLED": "false", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c"}, exportHTTP, false},
		{"unknown exporter", map[string]string{"OTEL_TRACES_EXPORTER": "zipkin"}, "", true},
		{"json protocol unsupported", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}, "", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := chooseExporter(envOf(tc.env))
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, want error %v", err, tc.wantErr)
			}
			if got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}

func TestSetupRejectsBadEnv(t *testing.T) {
	if _, err := Setup(context.Background(), Options{Getenv: envOf(map[string]string{"OTEL_TRACES_EXPORTER": "jaeger"})}); err == nil {
		t.Fatal("Setup accepted OTEL_TRACES_EXPORTER=jaeger")
	}
}

// collected gathers the spans an OTLP endpoint received.
type collected struct {
	mu    sync.Mutex
	spans []string // span names
	svc   []string // service.name of each resource
}

func (c *collected) add(req *collectortrace.ExportTraceServiceRequest) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, rs := range req.GetResourceSpans() {
		for _, a := range rs.GetResource().GetAttributes() {
			if a.GetKey() == "service.name" {
				c.svc = append(c.svc, a.GetValue().GetStringValue())
			}
		}
		for _, ss := range rs.GetScopeSpans() {
			for _, s := range ss.GetSpans() {
				c.spans = append(c.spans, s.GetName())
			}
		}
	}
}

func (c *collected) snapshot() ([]string, []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.spans...), append([]string(nil), c.svc...)
}

// traceServer is a minimal OTLP/gRPC trace collector.
type traceServer struct {
	collectortrace.UnimplementedTraceServiceServer
	got *collected
}

func (s *traceServer) Export(_ context.Context, req *collectortrace.ExportTraceServiceRequest) (*collectortrace.ExportTraceServiceResponse, error) {
	s.got.add(req)
	return &collectortrace.ExportTraceServiceResponse{}, nil
}

// TestSetupExportsOTLP sends a span through the real OTLP exporters, chosen
// and configured only by OTEL_* environment variables, to local collectors.
func TestSetupExportsOTLP(t *testing.T) {
	tests := []struct {
		protocol string
		start    func(t *testing.T, got *collected) (endpoint string)
	}{
		{"http/protobuf", func(t *testing.T, got *collected) string {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path != "/v1/traces" || r.Header.Get("Content-Type") != "application/x-protobuf" {
					http.Error(w, "unexpected "+r.URL.Path, http.StatusNotFound)
					return
				}
				body, err := io.ReadAll(r.Body)
				if err != nil {
					http.Error(w, err.Error(), http.StatusBadRequest)
					return
				}
				var req collectortrace.ExportTraceServiceRequest
				if err := proto.Unmarshal(body, &req); err != nil {
					http.Error(w, err.Error(), http.StatusBadRequest)
					return
				}
				got.add(&req)
				w.Header().Set("Content-Type", "application/x-protobuf")
				out, _ := proto.Marshal(&collectortrace.ExportTraceServiceResponse{})
				_, _ = w.Write(out)
			}))
			t.Cleanup(srv.Close)
			return srv.URL
		}},
		{"grpc", func(t *testing.T, got *collected) string {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			gs := grpc.NewServer()
			collectortrace.RegisterTraceServiceServer(gs, &traceServer{got: got})
			go func() { _ = gs.Serve(ln) }()
			t.Cleanup(gs.Stop)
			// An http:// endpoint means plaintext for the gRPC exporter.
			return "http://" + ln.Addr().String()
		}},
	}
	for _, tc := range tests {
		t.Run(tc.protocol, func(t *testing.T) {
			got := &collected{}
			endpoint := tc.start(t, got)
			t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
			t.Setenv("OTEL_EXPORTER_OTLP_PROTOCOL", tc.protocol)
			t.Setenv("OTEL_SERVICE_NAME", "from-env")

			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			tel, err := Setup(ctx, Options{ServiceName: "eryx-worker"})
			if err != nil {
				t.Fatal(err)
			}
			if !tel.Enabled() {
				t.Fatal("tracing off with an endpoint set")
			}
			_, span := tel.Tracer().Start(ctx, "job")
			span.End()
			if err := tel.Shutdown(ctx); err != nil {
				t.Fatalf("shutdown (flush): %v", err)
			}
			spans, svc := got.snapshot()
			if len(spans) != 1 || spans[0] != "job" {
				t.Errorf("collector got spans %q, want [job]", spans)
			}
			// OTEL_SERVICE_NAME overrides Options.ServiceName.
			if len(svc) != 1 || svc[0] != "from-env" {
				t.Errorf("collector got service.name %q, want [from-env]", svc)
			}
		})
	}
}

func TestNilTelemetry(t *testing.T) {
	var tel *Telemetry
	ctx := context.Background()
	if tel.Enabled() {
		t.Error("nil Telemetry enabled")
	}
	_, span := tel.Tracer().Start(ctx, "x")
	if span.IsRecording() {
		t.Error("nil Telemetry records spans")
	}
	span.End()
	if err := tel.ForceFlush(ctx); err != nil {
		t.Error(err)
	}
	if err := tel.Shutdown(ctx); err != nil {
		t.Error(err)
	}
}
