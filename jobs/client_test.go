package jobs_test

import (
	"context"
	"errors"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/eryx-dev/eryx/internal/check"
	"github.com/eryx-dev/eryx/internal/embednats"
	"github.com/eryx-dev/eryx/jobs"
)

// restartable is an embedded server that can be stopped and started again
// on the same port and store.
type restartable struct {
	t    *testing.T
	dir  string
	addr string
	ns   *server.Server
}

func startRestartable(t *testing.T) *restartable {
	r := &restartable{t: t, dir: t.TempDir(), addr: "127.0.0.1:-1"}
	r.start()
	r.addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(r.ns.Addr().(*net.TCPAddr).Port))
	t.Cleanup(func() {
		if r.ns != nil {
			r.ns.Shutdown()
		}
	})
	return r
}

func (r *restartable) start() {
	ns, err := embednats.Start(embednats.Options{Listen: r.addr, StoreDir: r.dir})
	if err != nil {
		r.t.Fatal(err)
	}
	r.ns = ns
}

func (r *restartable) stop() {
	r.ns.Shutdown()
	r.ns.WaitForShutdown()
	r.ns = nil
}

func (r *restartable) connect() *nats.Conn {
	nc, err := nats.Connect("nats://"+r.addr, nats.MaxReconnects(-1), nats.ReconnectWait(20*time.Millisecond),
		// No client-side buffering while disconnected: every attempt
		// fails at once, and Submit's own retries carry the job over.
		nats.ReconnectBufSize(-1))
	if err != nil {
		r.t.Fatal(err)
	}
	r.t.Cleanup(nc.Close)
	return nc
}

// TestSubmitRetriesUntilTheServerIsBack: a submission made while the
// server is down is retried under its message id until the server is
// back, and stored once.
func TestSubmitRetriesUntilTheServerIsBack(t *testing.T) {
	srv := startRestartable(t)
	nc := srv.connect()
	ctx := context.Background()
	js, _ := jetstream.New(nc)
	if err := (jobs.Topology{}).EnsureStreams(ctx, js); err != nil {
		t.Fatal(err)
	}
	c, err := jobs.NewClient(nc, jobs.Subjects{}, jobs.WithSubmitRetry(2*check.Bound))
	if err != nil {
		t.Fatal(err)
	}
	srv.stop()
	waitDisconnected(t, nc)
	type outcome struct {
		sub *jobs.Submission
		err error
	}
	done := make(chan outcome, 1)
	go func() {
		sub, err := c.Submit(ctx, "", &jobs.Job{ID: "through-restart", Code: "print(1)"})
		done <- outcome{sub, err}
	}()
	// Submit is retrying: nothing can have stored the job.
	select {
	case o := <-done:
		t.Fatalf("Submit returned while the server was down: %+v %v", o.sub, o.err)
	default:
	}
	srv.start()
	o := <-done
	if o.err != nil {
		t.Fatal(o.err)
	}
	if o.sub.Duplicate {
		t.Error("the job's own earlier attempt reported as a duplicate")
	}
	stream, err := js.Stream(ctx, "ERYX_JOBS")
	if err != nil {
		t.Fatal(err)
	}
	info, err := stream.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 1 {
		t.Fatalf("the jobs stream holds %d messages, want 1", info.State.Msgs)
	}
}

// TestSubmitGivesUpWithATypedError: with the server gone for good, Submit
// stops after its retry budget with a SubmitError that says so.
func TestSubmitGivesUpWithATypedError(t *testing.T) {
	srv := startRestartable(t)
	nc := srv.connect()
	ctx := context.Background()
	js, _ := jetstream.New(nc)
	if err := (jobs.Topology{}).EnsureStreams(ctx, js); err != nil {
		t.Fatal(err)
	}
	c, err := jobs.NewClient(nc, jobs.Subjects{}, jobs.WithSubmitRetry(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	srv.stop()
	waitDisconnected(t, nc)
	_, err = c.Submit(ctx, "", &jobs.Job{ID: "never", Code: "print(1)"})
	var se *jobs.SubmitError
	if !errors.Is(err, jobs.ErrNotAccepted) || !errors.As(err, &se) {
		t.Fatalf("error %v (%T), want a SubmitError", err, err)
	}
	if se.ID != "never" || se.Attempts < 2 || se.Err == nil {
		t.Fatalf("SubmitError %+v: want the id, several attempts and the last error", se)
	}
	t.Log(err)
}

// TestSubmitWithoutStreamsFailsAtOnce: a server without the platform's
// streams is not retried for the whole budget: ErrNoStreams.
func TestSubmitWithoutStreamsFailsAtOnce(t *testing.T) {
	srv := startRestartable(t)
	c, err := jobs.NewClient(srv.connect(), jobs.Subjects{}, jobs.WithSubmitRetry(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), check.Bound)
	defer cancel()
	if _, err := c.Submit(ctx, "", &jobs.Job{Code: "print(1)"}); !errors.Is(err, jobs.ErrNoStreams) {
		t.Fatalf("error %v, want ErrNoStreams", err)
	}
}

// waitDisconnected waits until the client knows its server is gone (until
// then a publication may sit in the socket for its whole ack wait).
func waitDisconnected(t *testing.T, nc *nats.Conn) {
	t.Helper()
	check.For(t, check.Bound, 5*time.Millisecond, func() error {
		if nc.IsConnected() {
			return errors.New("still connected")
		}
		return nil
	})
}
