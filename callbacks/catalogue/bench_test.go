package catalogue_test

import (
	"context"
	"encoding/json"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/eryx-dev/eryx/callbacks/catalogue"
)

// BenchmarkCallbackRoundTrip measures one callback invocation over NATS
// (embedded server, loopback): Catalogue.Invoke → service handler → reply,
// with the service on its own connection as in production. It reports the
// median and the 99th percentile besides the mean (ns/op).
func BenchmarkCallbackRoundTrip(b *testing.B) {
	args := json.RawMessage(`{"x":40,"y":2}`)
	for _, bc := range []struct {
		name    string
		maxConc int
	}{
		{"concurrent-handlers", 0},
		{"inline-handler", 1},
	} {
		b.Run(bc.name, func(b *testing.B) {
			s := startNATS(b)
			svc := toolsService()
			svc.MaxConcurrent = bc.maxConc
			serve(b, connect(b, s), svc)
			c := catalogue.New(context.Background(), connect(b, s), fastOpts())
			defer c.Close()
			ctx := catalogue.WithHeaders(context.Background(), nats.Header{"traceparent": {"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}})
			ctx, cancel := context.WithTimeout(ctx, time.Minute)
			defer cancel()
			if _, err := c.Invoke(ctx, "add", args); err != nil { // discovery happens here, not in the loop
				b.Fatal(err)
			}
			lat := make([]time.Duration, 0, b.N)
			b.ResetTimer()
			for b.Loop() {
				t0 := time.Now()
				if _, err := c.Invoke(ctx, "add", args); err != nil {
					b.Fatal(err)
				}
				lat = append(lat, time.Since(t0))
			}
			reportPercentiles(b, lat)
		})
	}
	// The floor: a bare request/reply on the same server.
	b.Run("raw-nats-request", func(b *testing.B) {
		s := startNATS(b)
		snc := connect(b, s)
		if _, err := snc.Subscribe("bench.echo", func(m *nats.Msg) { _ = m.Respond(m.Data) }); err != nil {
			b.Fatal(err)
		}
		if err := snc.Flush(); err != nil {
			b.Fatal(err)
		}
		nc := connect(b, s)
		lat := make([]time.Duration, 0, b.N)
		for b.Loop() {
			t0 := time.Now()
			if _, err := nc.Request("bench.echo", args, 5*time.Second); err != nil {
				b.Fatal(err)
			}
			lat = append(lat, time.Since(t0))
		}
		reportPercentiles(b, lat)
	})
}

func reportPercentiles(b *testing.B, lat []time.Duration) {
	if len(lat) == 0 {
		return
	}
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Nanoseconds()), "p50-ns")
	b.ReportMetric(float64(lat[len(lat)*99/100].Nanoseconds()), "p99-ns")
}
