package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/eryx-dev/eryx/internal/check"
	"github.com/eryx-dev/eryx/jobs"
)

func TestHelpListsEveryVariable(t *testing.T) {
	var out bytes.Buffer
	if code := run(context.Background(), []string{"--help"}, &out, io.Discard); code != 0 {
		t.Fatalf("exit %d", code)
	}
	typ := reflect.TypeFor[Config]()
	for i := range typ.NumField() {
		f := typ.Field(i)
		if !f.IsExported() {
			continue // derived from the variables, not one of them
		}
		name := "ERYX_" + f.Tag.Get("envconfig")
		line := ""
		for _, l := range strings.Split(out.String(), "\n") {
			if strings.HasPrefix(l, name+" ") {
				line = l
			}
		}
		if line == "" {
			t.Errorf("%s missing from --help", name)
			continue
		}
		if def := f.Tag.Get("default"); def != "" && !strings.Contains(line, def) {
			t.Errorf("%s: default %q not shown: %q", name, def, line)
		}
	}
}

func TestInvalidConfiguration(t *testing.T) {
	tests := []struct{ name, value string }{
		{"ERYX_POOL_SIZE", "0"},
		{"ERYX_MEMORY_LIMIT", "lots"},
		{"ERYX_EXEC_TIMEOUT", "-1s"},
		{"ERYX_ACK_WAIT", "10ms"},
		{"ERYX_LOG_FORMAT", "xml"},
		{"ERYX_SUBJECT_PREFIX", "a..b"},
		{"ERYX_QUEUE", "a.b"},
		{"ERYX_NET_ALLOW_HOSTS", "not a host!"},
		{"ERYX_NET_MAX_CONNECTIONS", "-3"},
		{"ERYX_FUEL_DEFAULT", "0"},
		{"ERYX_HASH_SEED", "-1"},
		{"ERYX_EMBEDDED_SYNC", "sometimes"},
		{"ERYX_EMBEDDED_SYNC", "-1s"},
		{"ERYX_FUEL_MAX", "10"}, // below the default
		{"ERYX_SECRETS", "UNSET_SECRET_VAR=api.example.com"},
		{"ERYX_SECRETS_FILE", "/nonexistent/secrets.json"},
		{"ERYX_RUNTIME_IMAGE", "full"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv(tt.name, tt.value)
			t.Setenv("ERYX_NATS_URL", "nats://127.0.0.1:1") // never start a server
			var stderr bytes.Buffer
			code := run(context.Background(), nil, io.Discard, &stderr)
			if code != 2 || !strings.Contains(stderr.String(), tt.name) {
				t.Fatalf("%s=%s: exit %d, stderr %q", tt.name, tt.value, code, stderr.String())
			}
		})
	}
	if code := run(context.Background(), []string{"--bogus"}, io.Discard, io.Discard); code != 2 {
		t.Errorf("unknown argument: exit %d", code)
	}
}

func TestByteSize(t *testing.T) {
	tests := []struct {
		in   string
		want uint64
		ok   bool
	}{
		{"134217728", 128 << 20, true},
		{"128MiB", 128 << 20, true},
		{"128M", 128 << 20, true},
		{"128mb", 128 << 20, true},
		{"1.5G", 3 << 29, true},
		{"64KiB", 64 << 10, true},
		{"10B", 10, true},
		{"", 0, false},
		{"-1M", 0, false},
		{"12X", 0, false},
	}
	for _, tt := range tests {
		var b ByteSize
		err := b.Decode(tt.in)
		if (err == nil) != tt.ok || (tt.ok && uint64(b) != tt.want) {
			t.Errorf("Decode(%q) = %d, %v", tt.in, b, err)
		}
	}
	if s := ByteSize(128 << 20).String(); s != "128MiB" {
		t.Errorf("String() = %q", s)
	}
}

func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = ln.Close() }()
	return strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
}

// TestEmbeddedServerOutOfTheBox runs the worker as a user would on one
// machine: no NATS URL, so it starts its own server; then a job, the
// metrics endpoint, and a drain on "SIGTERM".
func TestEmbeddedServerOutOfTheBox(t *testing.T) {
	natsPort, metricsPort := freePort(t), freePort(t)
	t.Setenv("ERYX_EMBEDDED_LISTEN", "127.0.0.1:"+natsPort)
	t.Setenv("ERYX_DATA_DIR", t.TempDir())
	t.Setenv("ERYX_METRICS_LISTEN", "127.0.0.1:"+metricsPort)
	t.Setenv("ERYX_POOL_SIZE", "2")
	t.Setenv("ERYX_WORKER_ID", "solo")
	t.Setenv("ERYX_CALLBACKS", "false")
	t.Setenv("ERYX_LOG_LEVEL", "warn")

	ctx, sigterm := context.WithCancel(context.Background())
	exit := make(chan int, 1)
	var logs bytes.Buffer
	go func() { exit <- run(ctx, nil, io.Discard, &logs) }()
	defer sigterm()

	var nc *nats.Conn
	// Generous: the first start compiles the runtime (the numpy image by
	// default), slow on a loaded machine and under -race.
	deadline := time.Now().Add(4 * check.Bound)
	for {
		var err error
		nc, err = nats.Connect("nats://127.0.0.1:" + natsPort)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("embedded server not up: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	defer nc.Close()
	client, err := jobs.NewClient(nc, jobs.Subjects{})
	if err != nil {
		t.Fatal(err)
	}
	var res *jobs.Result
	for time.Now().Before(deadline) { // the streams appear once the runtime is ready
		rctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		res, err = client.Run(rctx, "", &jobs.Job{Code: "print('out of the box')"}, jobs.Handlers{})
		cancel()
		if err == nil || !strings.Contains(err.Error(), "streams do not exist") {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	if res.Status != jobs.StatusOK || res.Stdout != "out of the box\n" || res.Worker != "solo" {
		t.Fatalf("%+v", res)
	}
	// The default runtime image has numpy.
	res, err = client.Run(ctx, "", &jobs.Job{Code: "import numpy as np\nprint(np.__version__, int(np.arange(4).sum()))"}, jobs.Handlers{})
	if err != nil || res.Status != jobs.StatusOK || res.Stdout != "1.24.2 6\n" {
		t.Fatalf("numpy job: %v %+v", err, res)
	}

	// A job is counted once its result is published, so a scrape may
	// trail the result the submitter already has (docs/observability.md).
	check.For(t, check.Bound, 20*time.Millisecond, func() error {
		resp, err := http.Get("http://127.0.0.1:" + metricsPort + "/metrics")
		if err != nil {
			return err
		}
		body, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if !strings.Contains(string(body), `status="ok"`) {
			return fmt.Errorf("metrics do not count the job:\n%s", body)
		}
		if strings.Contains(string(body), "eryx_sandbox_creations_total 0") || !strings.Contains(string(body), "eryx_sandbox_creations_total") {
			return fmt.Errorf("metrics do not count sandbox creations:\n%s", body)
		}
		return nil
	})
	ready, err := http.Get("http://127.0.0.1:" + metricsPort + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	readyBody, _ := io.ReadAll(ready.Body)
	_ = ready.Body.Close()
	if ready.StatusCode != http.StatusOK || !strings.Contains(string(readyBody), "pool") {
		t.Errorf("readyz %d: %s", ready.StatusCode, readyBody)
	}

	sigterm()
	select {
	case code := <-exit:
		if code != 0 {
			t.Fatalf("exit %d after drain; logs:\n%s", code, logs.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("worker did not stop")
	}
}
