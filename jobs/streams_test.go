package jobs

import (
	"slices"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// The events stream must not capture results (two streams' subjects may
// not overlap), and must refuse rather than evict.
func TestStreamConfigsSeparateResults(t *testing.T) {
	cfgs := Topology{}.StreamConfigs()
	byName := map[string]jetstream.StreamConfig{}
	for _, c := range cfgs {
		byName[c.Name] = c
	}
	events, results := byName["ERYX_EVENTS"], byName["ERYX_RESULTS"]
	if slices.Contains(events.Subjects, "eryx.t.*.job.*.result") || slices.Contains(events.Subjects, "eryx.t.*.job.*.*") {
		t.Errorf("events stream captures results: %v", events.Subjects)
	}
	if events.Discard != jetstream.DiscardNew || !events.DiscardNewPerSubject || events.MaxMsgsPerSubject != DefaultEventsMaxPerSubject {
		t.Errorf("events stream limits: %+v", events)
	}
	if !slices.Equal(results.Subjects, []string{"eryx.t.*.job.*.result"}) || results.MaxBytes != DefaultResultsMaxBytes {
		t.Errorf("results stream: %+v", results)
	}
}

func TestAttemptFilter(t *testing.T) {
	ev := func(attempt, seq, worker string) nats.Header {
		return nats.Header{HeaderAttempt: {attempt}, HeaderSeq: {seq}, HeaderWorker: {worker}}
	}
	type step struct {
		h           nats.Header
		ok, restart bool
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{"one attempt", []step{{ev("1", "1", "w1"), true, false}, {ev("1", "2", "w1"), true, false}}},
		{"redelivery", []step{{ev("1", "1", "w1"), true, false}, {ev("2", "1", "w2"), true, true}, {ev("1", "2", "w1"), false, false}}},
		{"another worker in the same attempt", []step{{ev("1", "1", "w1"), true, false}, {ev("1", "1", "evil"), false, false}, {ev("1", "2", "w1"), true, false}}},
		{"beyond max deliveries", []step{{ev("999", "1", "evil"), false, false}, {ev("1", "1", "w1"), true, false}}},
		{"garbage attempt", []step{{ev("x", "1", "evil"), false, false}, {ev("0", "1", "evil"), false, false}, {ev("-1", "1", "evil"), false, false}}},
		{"takeover not from the start", []step{{ev("1", "1", "w1"), true, false}, {ev("2", "5", "evil"), false, false}, {ev("1", "2", "w1"), true, false}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := &attemptFilter{max: 3}
			for i, s := range tt.steps {
				if ok, restart := f.accept(s.h); ok != s.ok || restart != s.restart {
					t.Errorf("step %d: accept=%v restart=%v, want %v %v", i, ok, restart, s.ok, s.restart)
				}
			}
		})
	}
}
