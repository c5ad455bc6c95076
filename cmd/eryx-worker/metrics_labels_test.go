package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/eryx-dev/eryx/callbacks"
	"github.com/eryx-dev/eryx/callbacks/catalogue"
	"github.com/eryx-dev/eryx/internal/testenv"
	"github.com/eryx-dev/eryx/runtime/sandbox"
	"github.com/eryx-dev/eryx/telemetry"
)

// TestMadeUpCallbackNamesDoNotBecomeLabels is issue 10's row 8: a job
// calling more made-up names than the label set holds, through the real
// catalogue, leaves the real callback's label intact.
func TestMadeUpCallbackNamesDoNotBecomeLabels(t *testing.T) {
	url := testenv.NATS(t)
	conn := func() *nats.Conn {
		nc, err := nats.Connect(url)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		return nc
	}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	srv, err := callbacks.Start(context.Background(), conn(), callbacks.Service{
		Name: "tools", Version: "1.0.0", Logger: quiet,
		Callbacks: []callbacks.Def{{Name: "real_one", Handler: func(context.Context, json.RawMessage) (any, error) { return 1, nil }}},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Stop() })
	ctx := context.Background()
	cat := catalogue.New(ctx, conn(), catalogue.Options{
		DiscoveryWait: 2 * time.Second, DiscoveryQuiet: 50 * time.Millisecond,
		RefreshInterval: -1, MinRefresh: time.Hour, Logger: quiet,
	})
	t.Cleanup(cat.Close)
	metrics := telemetry.NewMetrics()
	cbs := timedCallbacks{inner: cat, known: cat.Has, observe: metrics.Callback}

	for i := range 200 {
		if _, err := cbs.Invoke(ctx, fmt.Sprintf("made_up_%d", i), json.RawMessage(`{}`)); !errors.Is(err, sandbox.ErrUnknownCallback) {
			t.Fatalf("made-up name: %v, want ErrUnknownCallback", err)
		}
	}
	if _, err := cbs.Invoke(ctx, "real_one", json.RawMessage(`{}`)); err != nil {
		t.Fatal(err)
	}

	rec := httptest.NewRecorder()
	metrics.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body := rec.Body.String()
	for _, want := range []string{
		`eryx_callback_duration_seconds_count{callback="real_one",outcome="ok"} 1`,
		`eryx_callback_duration_seconds_count{callback="(unknown)",outcome="error"} 200`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	if strings.Contains(body, "made_up_") || strings.Contains(body, `callback="other"`) {
		t.Error("a made-up name reached the metric labels")
	}
}
