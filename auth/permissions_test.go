package auth_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/eryx-dev/eryx/auth"
	"github.com/eryx-dev/eryx/jobs"
	"github.com/eryx-dev/eryx/kvstate"
)

// TestPermissionMatrix attacks every role's permissions on a real
// nats-server, configured both ways (static users with the rendered
// blocks, and users issued by the callout), and checks that what each
// role needs still works.
func TestPermissionMatrix(t *testing.T) {
	deployments(t, func(t *testing.T, d *deployment) {
		ctx := context.Background()
		adm := d.connect(t, admin)
		setupStreams(t, adm)
		a := d.connect(t, tenantA)
		b := d.connect(t, tenantB)
		if _, err := b.js.Publish(ctx, "eryx.jobs.default.b", []byte(`{}`)); err != nil {
			t.Fatalf("tenant b submitting: %v", err)
		}
		w := d.connect(t, worker)

		t.Run("submitter publishes its own jobs, not another tenant's", func(t *testing.T) {
			if _, err := a.js.Publish(ctx, "eryx.jobs.default.a", []byte(`{}`)); err != nil {
				t.Fatalf("tenant a submitting: %v", err)
			}
			if _, err := a.js.Publish(ctx, "eryx.jobs.gpu.a", []byte(`{}`)); err != nil {
				t.Fatalf("tenant a submitting to another queue: %v", err)
			}
			for _, subj := range []string{"eryx.jobs.default.b", "eryx.jobs.default.*", "eryx.jobs.default"} {
				_ = a.Publish(subj, []byte(`{}`))
				a.violation(t, "tenant a submitting as b", subj)
			}
		})

		t.Run("submitter cannot forge results, events or advisories", func(t *testing.T) {
			for _, subj := range []string{
				"eryx.t.a.job.x.result", "eryx.t.a.job.x.stdout", "eryx.t.b.job.x.result",
				"eryx.job.x.result", // v1 layout
				"$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.ERYX_JOBS.workers-default",
				"eryx.events.barrier", "eryx.dlq.default.a", "eryx.workers.default.holds",
				"$KV.ERYX_SESSIONS.a.s1", "$O.ERYX_PACKAGES.M.x", "$SYS.REQ.USER.AUTH",
			} {
				_ = a.Publish(subj, []byte(`{}`))
				a.violation(t, "tenant a", subj)
			}
		})

		t.Run("submitter subscribes to its own events only", func(t *testing.T) {
			own, err := a.SubscribeSync("eryx.t.a.job.>")
			if err != nil {
				t.Fatal(err)
			}
			a.noViolation(t, "tenant a subscribing to its events")
			_ = own.Unsubscribe()
			for _, subj := range []string{"eryx.t.b.job.>", "eryx.>", "eryx.t.*.job.>", ">", "_INBOX.>",
				"_INBOX.eryx.t.b.>", "eryx.cb.>", "eryx.jobs.>", "eryx.t.b.cancel.*", "$SYS.REQ.USER.AUTH"} {
				if _, err := a.SubscribeSync(subj); err != nil {
					t.Fatal(err)
				}
				a.violation(t, "tenant a subscribing", subj)
			}
		})

		t.Run("submitter cancels its own jobs only", func(t *testing.T) {
			if _, err := a.js.Publish(ctx, "eryx.t.a.cancel.j1", nil); err != nil {
				t.Fatalf("tenant a cancelling: %v", err)
			}
			_ = a.Publish("eryx.t.b.cancel.j1", nil)
			a.violation(t, "tenant a cancelling b's job", "eryx.t.b.cancel.j1")
		})

		// A worker stores a result and an event for each tenant.
		for _, tn := range []string{"a", "b"} {
			for _, subj := range []string{"eryx.t." + tn + ".job.j1.result", "eryx.t." + tn + ".job.j1.stdout"} {
				if _, err := w.js.Publish(ctx, subj, []byte(tn+" secret")); err != nil {
					t.Fatalf("worker publishing %s: %v", subj, err)
				}
			}
		}

		t.Run("submitter reads its own results and events, not another tenant's", func(t *testing.T) {
			results, err := a.js.Stream(ctx, "ERYX_RESULTS")
			if err != nil {
				t.Fatal(err)
			}
			msg, err := results.GetLastMsgForSubject(ctx, "eryx.t.a.job.j1.result")
			if err != nil || string(msg.Data) != "a secret" {
				t.Fatalf("tenant a reading its result: %v", err)
			}
			events, err := a.js.Stream(ctx, "ERYX_EVENTS")
			if err != nil {
				t.Fatal(err)
			}
			if _, err := events.GetLastMsgForSubject(ctx, "eryx.t.a.job.j1.*"); err != nil {
				t.Fatalf("tenant a reading its last event: %v", err)
			}
			cons, err := a.js.OrderedConsumer(ctx, "ERYX_EVENTS", jetstream.OrderedConsumerConfig{FilterSubjects: []string{"eryx.t.a.job.j1.*"}})
			if err != nil {
				t.Fatalf("tenant a following its events: %v", err)
			}
			m, err := cons.Next(jetstream.FetchMaxWait(bound))
			if err != nil || string(m.Data()) != "a secret" {
				t.Fatalf("tenant a following its events: %v", err)
			}
			a.noViolation(t, "tenant a reading")

			for _, subj := range []string{
				"$JS.API.DIRECT.GET.ERYX_RESULTS.eryx.t.b.job.j1.result",
				"$JS.API.DIRECT.GET.ERYX_RESULTS.eryx.t.*.job.j1.result",
				"$JS.API.DIRECT.GET.ERYX_RESULTS.eryx.>",
				"$JS.API.DIRECT.GET.ERYX_RESULTS",     // by sequence: subject in the payload
				"$JS.API.STREAM.MSG.GET.ERYX_RESULTS", // idem
				"$JS.API.STREAM.MSG.GET.ERYX_JOBS",    // job code
				"$JS.API.DIRECT.GET.ERYX_EVENTS.eryx.t.b.job.j1.*",
				"$JS.API.CONSUMER.CREATE.ERYX_EVENTS.x", // unfiltered consumer
				"$JS.API.CONSUMER.CREATE.ERYX_EVENTS.x.eryx.t.b.job.>",
				"$JS.API.CONSUMER.CREATE.ERYX_EVENTS.x.eryx.t.*.job.>",
				"$JS.API.CONSUMER.CREATE.ERYX_JOBS.x.eryx.jobs.default.b",
				"$JS.API.CONSUMER.LIST.ERYX_EVENTS", "$JS.API.STREAM.PURGE.ERYX_RESULTS",
				"$JS.API.STREAM.DELETE.ERYX_JOBS", "$JS.API.STREAM.INFO.ERYX_JOBS",
				"$JS.API.STREAM.INFO.KV_ERYX_AUTH", "$JS.API.STREAM.INFO.KV_ERYX_SESSIONS",
			} {
				_ = a.PublishRequest(subj, a.NewInbox(), []byte(`{"seq":1}`))
				a.violation(t, "tenant a reading b", subj)
			}
			// The library's own call fails too.
			refused(t, a, "tenant a reading b's result", "$JS.API.DIRECT.GET.ERYX_RESULTS.eryx.t.b.", func(ctx context.Context) error {
				_, err := results.GetLastMsgForSubject(ctx, "eryx.t.b.job.j1.result")
				return err
			})
		})

		t.Run("a worker cannot submit as a tenant", func(t *testing.T) {
			for _, subj := range []string{"eryx.jobs.default.a", "eryx.jobs.default.default", "eryx.t.a.job.x.x"} {
				_ = w.Publish(subj, []byte(`{}`))
				w.violation(t, "worker submitting", subj)
			}
			for _, subj := range []string{"eryx.t.a.job.>", "eryx.jobs.>", "_INBOX.>", "eryx.cb.>"} {
				if _, err := w.SubscribeSync(subj); err != nil {
					t.Fatal(err)
				}
				w.violation(t, "worker subscribing", subj)
			}
			_ = w.Publish("$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.ERYX_JOBS.workers-default", nil)
			w.violation(t, "worker forging an advisory", "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.ERYX_JOBS.workers-default")
			// Consumers on the jobs stream only on its own queue's subjects.
			for _, subj := range []string{
				"$JS.API.CONSUMER.CREATE.ERYX_JOBS.workers-other~a.eryx.jobs.other.a",
				"$JS.API.CONSUMER.CREATE.ERYX_JOBS.x", // unfiltered
				"$JS.API.CONSUMER.CREATE.ERYX_JOBS.x.eryx.jobs.>",
			} {
				_ = w.PublishRequest(subj, w.NewInbox(), []byte(`{}`))
				w.violation(t, "worker creating a consumer beyond its queue", subj)
			}
			// The fair-share doorbell of its own queue is allowed.
			if _, err := w.SubscribeSync("eryx.jobs.default.*"); err != nil {
				t.Fatal(err)
			}
			w.noViolation(t, "worker doorbell")
		})

		t.Run("even an admin cannot forge advisories", func(t *testing.T) {
			subj := "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.ERYX_JOBS.workers-default"
			_ = adm.Publish(subj, nil)
			adm.violation(t, "admin forging an advisory", subj)
		})

		t.Run("worker runs its queue", func(t *testing.T) {
			workerFlow(t, w, a)
		})

		t.Run("tenant files buckets: the worker makes them, each tenant uses its own", func(t *testing.T) {
			filesFlow(t, w, a, b)
		})

		if d.authJS != nil {
			t.Run("eryx-admin tenant add with eryx-auth's credentials makes the files bucket", func(t *testing.T) {
				top := jobs.Topology{Subjects: jobs.Subjects{Prefix: prefix}, FilesMaxBytes: 4 << 20}
				if _, err := top.EnsureFilesBucket(ctx, d.authJS, "c"); err != nil {
					t.Fatalf("eryx-auth creating c's files bucket: %v", err)
				}
				if _, err := top.EnsureFilesBucket(ctx, d.authJS, "c"); err != nil {
					t.Fatalf("eryx-auth updating c's files bucket: %v", err)
				}
			})
		}

		t.Run("callback service serves its own names only", func(t *testing.T) {
			cb := d.connect(t, clockSvc)
			sub, err := cb.Subscribe("eryx.cb.clock", func(m *nats.Msg) { _ = m.Respond([]byte("12:00")) })
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = sub.Unsubscribe() }()
			cb.noViolation(t, "clock subscribing to its subject")
			reply, err := w.Request("eryx.cb.clock", []byte(`{}`), bound)
			if err != nil || string(reply.Data) != "12:00" {
				t.Fatalf("worker calling clock: %v", err)
			}
			for _, subj := range []string{"eryx.cb.add", "eryx.cb.clock.add", "eryx.cb.>", "eryx.cb.*", "eryx.t.a.job.>"} {
				if _, err := cb.SubscribeSync(subj); err != nil {
					t.Fatal(err)
				}
				cb.violation(t, "clock hijacking", subj)
			}
			for _, subj := range []string{"eryx.cb.add", "eryx.t.a.job.x.result", "eryx.jobs.default.a", "$SRV.INFO"} {
				_ = cb.Publish(subj, nil)
				cb.violation(t, "clock publishing", subj)
			}
			// Submitters cannot call or serve callbacks.
			_ = a.Publish("eryx.cb.clock", nil)
			a.violation(t, "tenant a calling a callback directly", "eryx.cb.clock")
		})
	})
}

// workerFlow does what a worker does, under the worker's permissions:
// fetch and ack a job of its queue, store a result, use sessions (KV and
// blob store, with flow control), read packages, dead-letter, ask for
// holds, read quotas.
func workerFlow(t *testing.T, w, a *conn) {
	ctx := context.Background()
	if _, err := a.js.Publish(ctx, "eryx.jobs.default.a", []byte(`{"id":"wf"}`)); err != nil {
		t.Fatal(err)
	}
	cons, err := w.js.CreateOrUpdateConsumer(ctx, "ERYX_JOBS", jetstream.ConsumerConfig{
		Durable: "workers-default~a", FilterSubject: "eryx.jobs.default.a", AckPolicy: jetstream.AckExplicitPolicy,
	})
	if err != nil {
		t.Fatalf("worker consumer: %v", err)
	}
	m, err := cons.Next(jetstream.FetchMaxWait(bound))
	if err != nil {
		t.Fatalf("worker fetching: %v", err)
	}
	if err := m.DoubleAck(ctx); err != nil {
		t.Fatalf("worker acking %s: %v", m.Subject(), err)
	}
	if _, err := w.js.Publish(ctx, "eryx.t.a.job.wf.result", []byte(`{}`), jetstream.WithExpectStream("ERYX_RESULTS")); err != nil {
		t.Fatalf("worker result: %v", err)
	}
	results, err := w.js.Stream(ctx, "ERYX_RESULTS")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := results.GetMsg(ctx, 1, jetstream.WithGetMsgSubject("eryx.t.a.job.wf.result")); err != nil {
		t.Fatalf("worker duplicate check: %v", err)
	}
	if _, err := w.js.Publish(ctx, "eryx.dlq.default.a", []byte(`{}`)); err != nil {
		t.Fatalf("worker dead-lettering: %v", err)
	}
	if _, err := w.js.Publish(ctx, "eryx.events.barrier", nil, jetstream.WithExpectStream("NONE")); err == nil {
		t.Fatal("barrier stored")
	}

	// Sessions: a snapshot larger than a KV value goes to the blob store.
	store, err := kvstate.Open(ctx, w.js, kvstate.Config{MaxValueSize: 1024})
	if err != nil {
		t.Fatalf("worker opening sessions: %v", err)
	}
	snap := bytes.Repeat([]byte("s"), 300<<10)
	if _, err := store.Commit(ctx, "a.s1", snap, 0, kvstate.CommitOptions{}); err != nil {
		t.Fatalf("worker committing a session: %v", err)
	}
	got, err := store.Load(ctx, "a.s1")
	if err != nil || !bytes.Equal(got.Data, snap) {
		t.Fatalf("worker loading a session: %v", err)
	}

	// Packages: read, never written by a worker.
	pkgs, err := w.js.ObjectStore(ctx, "ERYX_PACKAGES")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pkgs.GetBytes(ctx, "a/missing"); !errors.Is(err, jetstream.ErrObjectNotFound) {
		t.Fatalf("worker reading packages: %v", err)
	}
	refused(t, w, "worker writing a package", "$O.ERYX_PACKAGES.", func(ctx context.Context) error {
		_, err := pkgs.PutBytes(ctx, "a/evil", []byte("x"))
		return err
	})

	// Holds: ask the queue's workers, answer a peer.
	peer, err := w.Subscribe("eryx.workers.default.holds", func(m *nats.Msg) { _ = m.Respond([]byte(`[]`)) })
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Request("eryx.workers.default.holds", nil, bound); err != nil {
		t.Fatalf("worker holds: %v", err)
	}
	_ = peer.Unsubscribe()
	// Cancels of every tenant reach it.
	cancels, err := w.SubscribeSync("eryx.t.*.cancel.*")
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Flush(); err != nil { // the server has the subscription
		t.Fatal(err)
	}
	if _, err := a.js.Publish(ctx, "eryx.t.a.cancel.wf", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := cancels.NextMsg(bound); err != nil {
		t.Fatalf("worker seeing a cancel: %v", err)
	}
	drainNoViolation(t, w)
}

// filesFlow checks the per-tenant files buckets under the permissions: a
// worker creates a tenant's bucket and stores an output in it; the
// tenant puts, gets, lists, replaces and deletes its files, through the
// object store client and jobs.Client; it cannot create, resize or
// delete a bucket, nor reach another tenant's.
func filesFlow(t *testing.T, w, a, b *conn) {
	ctx := context.Background()
	top := jobs.Topology{Subjects: jobs.Subjects{Prefix: prefix}, FilesMaxBytes: 8 << 20}

	// A tenant cannot make its bucket (it would choose its size).
	refused(t, a, "tenant a creating its files bucket", "$JS.API.STREAM.CREATE.OBJ_ERYX_FILES_a", func(ctx context.Context) error {
		_, err := a.js.CreateObjectStore(ctx, jetstream.ObjectStoreConfig{Bucket: "ERYX_FILES_a"})
		return err
	})
	refused(t, a, "tenant a ensuring its files bucket", "$JS.API.STREAM.UPDATE.OBJ_ERYX_FILES_a", func(ctx context.Context) error {
		_, err := top.EnsureFilesBucket(ctx, a.js, "a")
		return err
	})

	// The worker makes it on first use, and stores a job's output.
	wstore, err := top.EnsureFilesBucket(ctx, w.js, "a")
	if err != nil {
		t.Fatalf("worker creating a's files bucket: %v", err)
	}
	if _, err := wstore.PutBytes(ctx, jobs.OutputObject("j1", "out.txt"), []byte("output")); err != nil {
		t.Fatalf("worker storing an output: %v", err)
	}
	if _, err := top.EnsureFilesBucket(ctx, w.js, "a"); err != nil { // again: an update
		t.Fatalf("worker updating a's files bucket: %v", err)
	}
	bstore, err := top.EnsureFilesBucket(ctx, w.js, "b")
	if err != nil {
		t.Fatalf("worker creating b's files bucket: %v", err)
	}
	if _, err := bstore.PutBytes(ctx, "secret.txt", []byte("b's")); err != nil {
		t.Fatal(err)
	}
	// What a worker does with an input: its info, then its content.
	if _, err := bstore.GetInfo(ctx, "secret.txt"); err != nil {
		t.Fatalf("worker looking up an input: %v", err)
	}
	if got, err := bstore.GetBytes(ctx, "secret.txt"); err != nil || string(got) != "b's" {
		t.Fatalf("worker reading an input: %q %v", got, err)
	}
	w.noViolation(t, "worker with files")

	// The tenant uses it, with the object store client...
	store, err := a.js.ObjectStore(ctx, "ERYX_FILES_a")
	if err != nil {
		t.Fatalf("tenant a opening its files bucket: %v", err)
	}
	if got, err := store.GetBytes(ctx, "j1/out.txt"); err != nil || string(got) != "output" {
		t.Fatalf("tenant a reading its job's output: %q %v", got, err)
	}
	big := bytes.Repeat([]byte("d"), 300<<10) // several chunks
	for range 2 {                             // the second replaces (and purges) the first
		if _, err := store.PutBytes(ctx, "data.csv", big); err != nil {
			t.Fatalf("tenant a uploading: %v", err)
		}
	}
	if got, err := store.GetBytes(ctx, "data.csv"); err != nil || !bytes.Equal(got, big) {
		t.Fatalf("tenant a downloading: %v", err)
	}
	if infos, err := store.List(ctx); err != nil || len(infos) != 2 {
		t.Fatalf("tenant a listing: %d %v", len(infos), err)
	}
	if err := store.Delete(ctx, "data.csv"); err != nil {
		t.Fatalf("tenant a deleting: %v", err)
	}
	// ... and through jobs.Client.
	c, err := jobs.NewClient(a.Conn, jobs.Subjects{Prefix: prefix}, jobs.WithTenant("a"))
	if err != nil {
		t.Fatal(err)
	}
	local := filepath.Join(t.TempDir(), "in.csv")
	if err := os.WriteFile(local, []byte("x,y\n1,2\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	name, err := c.UploadFile(ctx, local)
	if err != nil {
		t.Fatalf("tenant a UploadFile: %v", err)
	}
	if again, err := c.UploadFile(ctx, local); err != nil || again != name {
		t.Fatalf("tenant a UploadFile again: %q %v", again, err)
	}
	var buf bytes.Buffer
	if _, err := c.GetFile(ctx, name, &buf); err != nil || buf.String() != "x,y\n1,2\n" {
		t.Fatalf("tenant a GetFile: %v", err)
	}
	if files, err := c.ListFiles(ctx, "j1/"); err != nil || len(files) != 1 || files[0].Name != "j1/out.txt" {
		t.Fatalf("tenant a ListFiles: %+v %v", files, err)
	}
	if err := c.DeleteFile(ctx, name); err != nil {
		t.Fatalf("tenant a DeleteFile: %v", err)
	}
	a.noViolation(t, "tenant a with its files")

	// It cannot resize, delete or purge-by-API its bucket's stream config,
	// make another bucket, or reach b's.
	refused(t, a, "tenant a resizing its bucket", "$JS.API.STREAM.UPDATE.OBJ_ERYX_FILES_a", func(ctx context.Context) error {
		_, err := a.js.UpdateObjectStore(ctx, jetstream.ObjectStoreConfig{Bucket: "ERYX_FILES_a", MaxBytes: -1})
		return err
	})
	refused(t, a, "tenant a deleting its bucket", "$JS.API.STREAM.DELETE.OBJ_ERYX_FILES_a", func(ctx context.Context) error {
		return a.js.DeleteObjectStore(ctx, "ERYX_FILES_a")
	})
	refused(t, a, "tenant a creating a bucket", "$JS.API.STREAM.CREATE.OBJ_ERYX_FILES_c", func(ctx context.Context) error {
		_, err := a.js.CreateObjectStore(ctx, jetstream.ObjectStoreConfig{Bucket: "ERYX_FILES_c"})
		return err
	})
	refused(t, a, "tenant a opening b's bucket", "$JS.API.STREAM.INFO.OBJ_ERYX_FILES_b", func(ctx context.Context) error {
		_, err := a.js.ObjectStore(ctx, "ERYX_FILES_b")
		return err
	})
	for _, subj := range []string{
		"$O.ERYX_FILES_b.M.c2VjcmV0LnR4dA==", "$O.ERYX_FILES_b.C.x", "$O.ERYX_FILES.M.x",
		"$JS.API.DIRECT.GET.OBJ_ERYX_FILES_b.$O.ERYX_FILES_b.M.c2VjcmV0LnR4dA==",
		"$JS.API.DIRECT.GET.OBJ_ERYX_FILES_a", // by sequence: would name any subject
		"$JS.API.STREAM.MSG.GET.OBJ_ERYX_FILES_b",
		"$JS.API.CONSUMER.CREATE.OBJ_ERYX_FILES_b.x.$O.ERYX_FILES_b.M.>",
		"$JS.API.CONSUMER.CREATE.OBJ_ERYX_FILES_b.x",
		"$JS.API.STREAM.PURGE.OBJ_ERYX_FILES_b",
		"$JS.API.STREAM.INFO.OBJ_ERYX_PACKAGES",
		"$JS.API.STREAM.UPDATE.OBJ_ERYX_FILES_a",
	} {
		_ = a.PublishRequest(subj, a.NewInbox(), []byte(`{}`))
		a.violation(t, "tenant a reaching beyond its bucket", subj)
	}
	if got, err := bstore.GetBytes(ctx, "secret.txt"); err != nil || string(got) != "b's" {
		t.Fatalf("b's file after a's attempts: %q %v", got, err)
	}

	// b uses its own bucket, not a's.
	if _, err := jobs.NewClient(b.Conn, jobs.Subjects{Prefix: prefix}, jobs.WithTenant("b")); err != nil {
		t.Fatal(err)
	}
	bs, err := b.js.ObjectStore(ctx, "ERYX_FILES_b")
	if err != nil {
		t.Fatalf("tenant b opening its bucket: %v", err)
	}
	if got, err := bs.GetBytes(ctx, "secret.txt"); err != nil || string(got) != "b's" {
		t.Fatalf("tenant b reading its file: %v", err)
	}
	b.noViolation(t, "tenant b with its files")

	// The wildcards a worker needs for every tenant's bucket take nothing
	// else back: no package writes, no purge of results, events or the
	// auth bucket, no reconfiguring the auth bucket, no reading its keys.
	for _, subj := range []string{
		"$O.ERYX_PACKAGES.M.x",
		"$JS.API.STREAM.PURGE.ERYX_RESULTS", "$JS.API.STREAM.PURGE.ERYX_EVENTS",
		"$JS.API.STREAM.PURGE.KV_ERYX_AUTH", "$JS.API.STREAM.PURGE.OBJ_ERYX_PACKAGES",
		"$JS.API.STREAM.UPDATE.KV_ERYX_AUTH", "$JS.API.STREAM.CREATE.KV_ERYX_AUTH",
		"$JS.API.STREAM.DELETE.OBJ_ERYX_FILES_a",
		"$JS.API.DIRECT.GET.KV_ERYX_AUTH", "$JS.API.STREAM.MSG.GET.KV_ERYX_AUTH",
		"$JS.API.DIRECT.GET.KV_ERYX_AUTH.$KV.ERYX_AUTH.keys.x",
		"$JS.API.CONSUMER.CREATE.KV_ERYX_AUTH.x.$KV.ERYX_AUTH.>",
		"$JS.API.CONSUMER.CREATE.ERYX_RESULTS.x.eryx.t.a.job.>",
	} {
		_ = w.PublishRequest(subj, w.NewInbox(), []byte(`{}`))
		w.violation(t, "worker beyond the files buckets", subj)
	}
}

func drainNoViolation(t *testing.T, c *conn) {
	t.Helper()
	c.noViolation(t, "worker")
}

// refused runs op, which the permissions must refuse: it waits for the
// server's violation naming a subject starting with subjectPrefix, then
// ends op (whose library call would otherwise wait for its timeout) and
// checks that it failed.
func refused(t *testing.T, c *conn, what, subjectPrefix string, op func(context.Context) error) {
	t.Helper()
	c.refused = append(c.refused, subjectPrefix)
	ctx, cancel := context.WithTimeout(context.Background(), bound)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- op(ctx) }()
	timer := time.NewTimer(bound)
	defer timer.Stop()
	for seen := false; !seen; {
		select {
		case err := <-c.errs:
			seen = errors.Is(err, nats.ErrPermissionViolation) && strings.Contains(err.Error(), `"`+subjectPrefix)
			if !seen && !c.expected(err) {
				t.Fatalf("%s: %v", what, err)
			}
		case <-timer.C:
			t.Fatalf("%s: no permissions violation for %s...", what, subjectPrefix)
		}
	}
	cancel()
	if err := <-done; err == nil {
		t.Fatalf("%s: succeeded", what)
	}
	// The operation may have been refused more than once (chunks, then
	// the object's metadata): the flush orders those before its PONG.
	_ = c.Flush()
	for {
		select {
		case err := <-c.errs:
			if !c.expected(err) {
				t.Fatalf("%s: %v", what, err)
			}
		default:
			return
		}
	}
}

// TestRenderConfigParses checks that every role's block is a valid
// nats-server configuration (the permissions test above runs on them).
func TestRenderConfigParses(t *testing.T) {
	for _, id := range identites {
		block := auth.RenderConfig(id.perms(t), "")
		deny := `"$JS.EVENT.>"`
		if id.role == auth.RoleCallback {
			deny = `deny: [">"]`
		}
		if !strings.HasPrefix(block, "permissions {") || !strings.Contains(block, deny) {
			t.Errorf("%s: %s", id, block)
		}
	}
	if _, err := auth.SubmitterPermissions(prefix, "B"); !errors.Is(err, auth.ErrInvalid) {
		t.Errorf("upper-case tenant: %v", err)
	}
	if _, err := auth.SubmitterPermissions(prefix, "a.b"); !errors.Is(err, auth.ErrInvalid) {
		t.Errorf("two-token tenant: %v", err)
	}
	if _, err := auth.CallbackServicePermissions(prefix, []string{"x.>"}); !errors.Is(err, auth.ErrInvalid) {
		t.Errorf("wildcard callback name: %v", err)
	}
	if _, err := auth.CallbackServicePermissions(prefix, nil); !errors.Is(err, auth.ErrInvalid) {
		t.Errorf("no callback names: %v", err)
	}
}
