package jobs

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Defaults of the streams' retention.
const (
	// DefaultDedupWindow is how long the jobs stream remembers message ids.
	// A duplicate published later is still caught, by the worker's check
	// for an existing result (see Worker), for as long as EventsMaxAge.
	DefaultDedupWindow = 10 * time.Minute
	// DefaultEventsMaxAge is how long a job's events and result can be
	// replayed.
	DefaultEventsMaxAge = time.Hour
	// DefaultEventsMaxBytes bounds the events stream. When it is full, new
	// events are refused (discard new): a flood loses its own events, it
	// never evicts another job's.
	DefaultEventsMaxBytes = 1 << 30
	// DefaultEventsMaxPerSubject caps the messages of one job's stdout,
	// stderr or trace (all attempts together); later ones are refused.
	DefaultEventsMaxPerSubject = 10_000
	// DefaultEventsMaxMsgBytes is the largest event the stream stores. The
	// worker splits output at 64 KiB, so only oversized trace events meet it.
	DefaultEventsMaxMsgBytes = 256 << 10
	// DefaultResultsMaxBytes bounds the results stream, where only results
	// are stored (one per job, at most max_payload each); the oldest go.
	DefaultResultsMaxBytes = 1 << 30
	// DefaultMaxQueuedPerTenant caps the jobs one tenant has queued on one
	// queue (the jobs stream's per-subject limit); a submission beyond it
	// is refused at publication (ErrQueueFull).
	DefaultMaxQueuedPerTenant = 10_000
	// DefaultFilesTTL is how long an object of the files bucket is kept
	// after it was written.
	DefaultFilesTTL = 24 * time.Hour
	// DefaultFilesBucketBytes bounds the files bucket; when it is full,
	// uploads and output files are refused.
	DefaultFilesBucketBytes = 1 << 30
	// DefaultDeadLetterMaxAge is how long dead letters are kept.
	DefaultDeadLetterMaxAge = 7 * 24 * time.Hour
	// DefaultDrainsTTL is how long a job's count of drained deliveries is
	// kept: workers delete it when the job ends, so only counts of jobs
	// that stay queued longer than this are forgotten (they become
	// ordinary deliveries for the job's budget).
	DefaultDrainsTTL = 7 * 24 * time.Hour
)

// Topology is the retention of the platform's streams.
type Topology struct {
	Subjects    Subjects
	DedupWindow time.Duration
	// MaxQueuedPerTenant caps the jobs of one tenant on one queue.
	MaxQueuedPerTenant int64
	EventsMaxAge       time.Duration
	EventsMaxBytes     int64
	// EventsMaxPerSubject and EventsMaxMsgBytes bound one job's share of
	// the events stream.
	EventsMaxPerSubject int64
	EventsMaxMsgBytes   int32
	// ResultsMaxBytes bounds the results stream; results are kept for
	// EventsMaxAge.
	ResultsMaxBytes int64
	DLQMaxAge       time.Duration
	Control         ControlLimits // bounds of the control stream
	// FilesTTL and FilesMaxBytes bound each tenant's files bucket.
	FilesTTL      time.Duration
	FilesMaxBytes int64
	// Storage of the streams; file unless a test asks for memory.
	Storage jetstream.StorageType
	// Replicas of each stream (1 unless joining a cluster).
	Replicas int
}

func (t Topology) withDefaults() Topology {
	if t.DedupWindow <= 0 {
		t.DedupWindow = DefaultDedupWindow
	}
	if t.MaxQueuedPerTenant <= 0 {
		t.MaxQueuedPerTenant = DefaultMaxQueuedPerTenant
	}
	if t.EventsMaxAge <= 0 {
		t.EventsMaxAge = DefaultEventsMaxAge
	}
	if t.EventsMaxBytes <= 0 {
		t.EventsMaxBytes = DefaultEventsMaxBytes
	}
	if t.EventsMaxPerSubject <= 0 {
		t.EventsMaxPerSubject = DefaultEventsMaxPerSubject
	}
	if t.EventsMaxMsgBytes <= 0 {
		t.EventsMaxMsgBytes = DefaultEventsMaxMsgBytes
	}
	if t.ResultsMaxBytes <= 0 {
		t.ResultsMaxBytes = DefaultResultsMaxBytes
	}
	if t.DLQMaxAge <= 0 {
		t.DLQMaxAge = DefaultDeadLetterMaxAge
	}
	if t.Replicas <= 0 {
		t.Replicas = 1
	}
	return t
}

// StreamConfigs returns the configuration of every stream, for
// documentation and for EnsureStreams. Protocol v2 changed every stream's
// subjects, and no v2 subject overlaps a v1 one, so streams of either
// version are updated in place in any order (what they stored under v1
// subjects stays until it ages out; MigrateV1Jobs moves queued jobs).
func (t Topology) StreamConfigs() []jetstream.StreamConfig {
	t = t.withDefaults()
	s := t.Subjects
	return []jetstream.StreamConfig{{
		Name:        s.JobsStream(),
		Description: "eryx jobs, one work queue per queue name",
		Subjects:    []string{s.AllJobs()},
		// Work-queue retention: a job is gone once a worker acks it.
		Retention:  jetstream.WorkQueuePolicy,
		Duplicates: t.DedupWindow,
		// One subject per queue and tenant: the per-subject limit is each
		// tenant's queue length, and a full one refuses new jobs (the
		// submitter gets the error) without touching anyone else's.
		MaxMsgsPerSubject:    t.MaxQueuedPerTenant,
		Discard:              jetstream.DiscardNew,
		DiscardNewPerSubject: true,
		Storage:              t.Storage,
		Replicas:             t.Replicas,
	}, {
		Name:        s.EventsStream(),
		Description: "eryx per-job stdout, stderr and trace events",
		Subjects:    s.EventsStreamSubjects(),
		Retention:   jetstream.LimitsPolicy,
		MaxAge:      t.EventsMaxAge,
		MaxBytes:    t.EventsMaxBytes,
		MaxMsgSize:  t.EventsMaxMsgBytes,
		// Discard new, per subject too: a job that floods its events has
		// its own later events refused; nobody else's are evicted.
		Discard:              jetstream.DiscardNew,
		MaxMsgsPerSubject:    t.EventsMaxPerSubject,
		DiscardNewPerSubject: true,
		Storage:              t.Storage,
		Replicas:             t.Replicas,
		// Direct gets let a watcher find a job's last event cheaply.
		AllowDirect: true,
		Duplicates:  t.DedupWindow,
	}, {
		Name:        s.ResultsStream(),
		Description: "eryx per-job results, exactly one per job",
		Subjects:    []string{s.AllResults()},
		Retention:   jetstream.LimitsPolicy,
		MaxAge:      t.EventsMaxAge,
		MaxBytes:    t.ResultsMaxBytes,
		// Only results count against MaxBytes, so only other results can
		// evict one, and a full stream still takes new results. Workers
		// publish with a compare-and-set, so a job has one result;
		// readers take the first on the subject all the same.
		Discard:  jetstream.DiscardOld,
		Storage:  t.Storage,
		Replicas: t.Replicas,
		// Direct gets make the "is there a result already" check cheap.
		AllowDirect: true,
	}, {
		Name:              s.ControlStream(),
		Description:       "eryx cancel requests, kept so queued jobs can be skipped",
		Subjects:          []string{s.AllCancels()},
		Retention:         jetstream.LimitsPolicy,
		MaxAge:            t.EventsMaxAge,
		MaxMsgsPerSubject: 1,
		MaxMsgs:           t.Control.maxMsgs(),
		MaxBytes:          t.Control.maxBytes(),
		MaxMsgSize:        ControlMaxMsgSize,
		Discard:           jetstream.DiscardOld,
		Storage:           t.Storage,
		Replicas:          t.Replicas,
		AllowDirect:       true,
	}, {
		Name:        s.DeadLetterStream(),
		Description: "eryx jobs that exhausted their deliveries, with the reason",
		Subjects:    []string{s.AllDeadLetters()},
		Retention:   jetstream.LimitsPolicy,
		MaxAge:      t.DLQMaxAge,
		Storage:     t.Storage,
		Replicas:    t.Replicas,
	}}
}

// EnsureStreams creates or updates the platform's streams and the packages
// object store. Workers call it at start; clients never do.
func (t Topology) EnsureStreams(ctx context.Context, js jetstream.JetStream) error {
	for _, cfg := range t.StreamConfigs() {
		if _, err := js.CreateOrUpdateStream(ctx, cfg); err != nil {
			return fmt.Errorf("jobs: stream %s: %w", cfg.Name, err)
		}
	}
	t = t.withDefaults()
	_, err := js.CreateOrUpdateObjectStore(ctx, jetstream.ObjectStoreConfig{
		Bucket:      t.Subjects.PackagesBucket(),
		Description: "eryx packages jobs can import, by name",
		Storage:     t.Storage,
		Replicas:    t.Replicas,
	})
	if err != nil {
		return fmt.Errorf("jobs: object store %s: %w", t.Subjects.PackagesBucket(), err)
	}
	_, err = js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      t.Subjects.DrainsBucket(),
		Description: "eryx: deliveries of queued jobs handed back by draining workers, by stream sequence",
		History:     1,
		TTL:         DefaultDrainsTTL,
		Storage:     t.Storage,
		Replicas:    t.Replicas,
	})
	if err != nil {
		return fmt.Errorf("jobs: bucket %s: %w", t.Subjects.DrainsBucket(), err)
	}
	return nil
}

// EnsureFilesBucket creates tenant's files bucket, or brings it to the
// configured TTL and size, and returns it. Workers call it the first time
// a job of the tenant needs files, and eryx-admin when it adds a tenant;
// submitters may only use an existing bucket, so no tenant can make or
// resize one.
func (t Topology) EnsureFilesBucket(ctx context.Context, js jetstream.JetStream, tenant string) (jetstream.ObjectStore, error) {
	if err := ValidTenant(tenant); err != nil {
		return nil, err
	}
	t = t.withDefaults()
	ttl, maxBytes := t.FilesTTL, t.FilesMaxBytes
	if ttl <= 0 {
		ttl = DefaultFilesTTL
	}
	if maxBytes <= 0 {
		maxBytes = DefaultFilesBucketBytes
	}
	bucket := t.Subjects.FilesBucket(tenant)
	store, err := js.CreateOrUpdateObjectStore(ctx, jetstream.ObjectStoreConfig{
		Bucket:      bucket,
		Description: "eryx jobs' input and output files of tenant " + tenant,
		TTL:         ttl,
		MaxBytes:    maxBytes,
		Storage:     t.Storage,
		Replicas:    t.Replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("jobs: object store %s: %w", bucket, err)
	}
	return store, nil
}

// DefaultMigrateMax bounds the v1 jobs one MigrateV1Jobs call moves.
const DefaultMigrateMax = 100_000

// MigrateV1Jobs moves the jobs queued under protocol v1 subjects
// (<prefix>.jobs.<queue>, which no v2 consumer matches) to the default
// tenant of their queue (<prefix>.jobs.<queue>.default): a single-tenant
// deployment upgraded with jobs in its queue loses none. Each is
// republished, then deleted, so a crash in between runs it at most twice
// (the worker's duplicate check stops the second if the first finished).
// It moves at most max (DefaultMigrateMax if <= 0) and returns how many.
func (t Topology) MigrateV1Jobs(ctx context.Context, js jetstream.JetStream, max int) (int, error) {
	if max <= 0 {
		max = DefaultMigrateMax
	}
	s := t.Subjects
	stream, err := js.Stream(ctx, s.JobsStream())
	if err != nil {
		return 0, fmt.Errorf("jobs: migrating v1 jobs: %w", err)
	}
	moved := 0
	for seq := uint64(1); moved < max; {
		msg, err := stream.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(s.LegacyJobs()))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return moved, nil
		}
		if err != nil {
			return moved, fmt.Errorf("jobs: migrating v1 jobs: %w", err)
		}
		queue := strings.TrimPrefix(msg.Subject, s.prefix()+".jobs.")
		out := &nats.Msg{Subject: s.Jobs(queue, DefaultTenant), Data: msg.Data, Header: nats.Header{}}
		for k, v := range msg.Header {
			// Nats-Msg-Id would be deduplicated against the original;
			// the job's id is in its body.
			if !strings.HasPrefix(strings.ToLower(k), "nats-") {
				out.Header[k] = v
			}
		}
		if ValidToken(queue) {
			if _, err := js.PublishMsg(ctx, out, jetstream.WithExpectStream(s.JobsStream())); err != nil {
				return moved, fmt.Errorf("jobs: migrating v1 job %d: %w", msg.Sequence, err)
			}
		}
		if err := stream.DeleteMsg(ctx, msg.Sequence); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
			return moved, fmt.Errorf("jobs: migrating v1 job %d: %w", msg.Sequence, err)
		}
		moved++
		seq = msg.Sequence + 1
	}
	return moved, nil
}
