package jobs

import (
	"context"
	"fmt"
	"time"

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
	// DefaultEventsMaxBytes bounds the events stream; the oldest events go.
	DefaultEventsMaxBytes = 1 << 30
	// DefaultDeadLetterMaxAge is how long dead letters are kept.
	DefaultDeadLetterMaxAge = 7 * 24 * time.Hour
)

// Topology is the retention of the platform's streams.
type Topology struct {
	Subjects       Subjects
	DedupWindow    time.Duration
	EventsMaxAge   time.Duration
	EventsMaxBytes int64
	DLQMaxAge      time.Duration
	Control        ControlLimits // bounds of the control stream
	// Storage of the streams; file unless a test asks for memory.
	Storage jetstream.StorageType
	// Replicas of each stream (1 unless joining a cluster).
	Replicas int
}

func (t Topology) withDefaults() Topology {
	if t.DedupWindow <= 0 {
		t.DedupWindow = DefaultDedupWindow
	}
	if t.EventsMaxAge <= 0 {
		t.EventsMaxAge = DefaultEventsMaxAge
	}
	if t.EventsMaxBytes <= 0 {
		t.EventsMaxBytes = DefaultEventsMaxBytes
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
// documentation and for EnsureStreams.
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
		Storage:    t.Storage,
		Replicas:   t.Replicas,
	}, {
		Name:        s.EventsStream(),
		Description: "eryx per-job stdout, stderr, trace and result events",
		Subjects:    []string{s.AllEvents()},
		Retention:   jetstream.LimitsPolicy,
		MaxAge:      t.EventsMaxAge,
		MaxBytes:    t.EventsMaxBytes,
		Discard:     jetstream.DiscardOld,
		Storage:     t.Storage,
		Replicas:    t.Replicas,
		// Direct gets make the "is there a result already" check cheap.
		AllowDirect: true,
		Duplicates:  t.DedupWindow,
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
	}, {
		// The server announces exhausted jobs on core NATS only; kept in a
		// stream, an advisory waits for a worker instead of being lost.
		Name:        s.AdvisoriesStream(),
		Description: "eryx: max-deliveries advisories of the jobs stream, until a worker dead-letters the job",
		Subjects:    []string{s.AllMaxDeliveriesAdvisories()},
		Retention:   jetstream.WorkQueuePolicy,
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
	return nil
}
