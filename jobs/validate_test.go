package jobs

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestDecodeJob(t *testing.T) {
	tests := []struct {
		name string
		data string
		max  int
		want error
	}{
		{"minimal", `{"id":"a","code":"print(1)"}`, 0, nil},
		{"all fields", `{"v":1,"id":"a","code":"1","session":"s","timeout_ms":5,"memory_mb":64,"trace":true,"packages":["p"],"callbacks":[],"network":{"allow":[]}}`, 0, nil},
		{"too large", `{"id":"a","code":"print(1)"}`, 10, ErrTooLarge},
		{"not JSON", `print(1)`, 0, ErrMalformed},
		{"unknown field", `{"id":"a","code":"1","timeout":5}`, 0, ErrMalformed},
		{"trailing data", `{"id":"a","code":"1"} {}`, 0, ErrMalformed},
		{"wrong type", `{"id":1,"code":"1"}`, 0, ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			job, err := DecodeJob([]byte(tt.data), tt.max)
			if !errors.Is(err, tt.want) || (tt.want == nil) != (err == nil) {
				t.Fatalf("err %v, want %v", err, tt.want)
			}
			if err == nil && job.V != Version {
				t.Errorf("v %d", job.V)
			}
		})
	}
}

func TestCallbacksNullVersusEmpty(t *testing.T) {
	all, _ := DecodeJob([]byte(`{"id":"a","code":""}`), 0)
	none, _ := DecodeJob([]byte(`{"id":"a","code":"","callbacks":[]}`), 0)
	if all.Callbacks != nil || none.Callbacks == nil || len(none.Callbacks) != 0 {
		t.Fatalf("absent %#v, empty %#v", all.Callbacks, none.Callbacks)
	}
}

func TestValidate(t *testing.T) {
	p := Policy{
		Timeout: 30 * time.Second, MemoryBytes: 256 << 20, MinMemoryBytes: 32 << 20,
		MaxCodeBytes: 100, Sessions: true, Trace: true,
	}
	tests := []struct {
		name    string
		job     Job
		want    error
		timeout time.Duration
		memory  uint64
	}{
		{"defaults", Job{ID: "a"}, nil, 30 * time.Second, 256 << 20},
		{"narrower limits", Job{ID: "a", TimeoutMS: 1500, MemoryMB: 64}, nil, 1500 * time.Millisecond, 64 << 20},
		{"uuid id", Job{ID: "0b6f5e0a-3c1e-4a57-9b7e-1f2d3c4b5a69"}, nil, 30 * time.Second, 256 << 20},
		{"empty id", Job{}, ErrInvalidID, 0, 0},
		{"dotted id", Job{ID: "a.b"}, ErrInvalidID, 0, 0},
		{"wildcard id", Job{ID: "*"}, ErrInvalidID, 0, 0},
		{"long id", Job{ID: strings.Repeat("a", 129)}, ErrInvalidID, 0, 0},
		{"bad session", Job{ID: "a", Session: "x y"}, ErrInvalidID, 0, 0},
		{"newer version", Job{V: 2, ID: "a"}, ErrUnsupportedVersion, 0, 0},
		{"code too large", Job{ID: "a", Code: strings.Repeat("x", 101)}, ErrTooLarge, 0, 0},
		{"NUL", Job{ID: "a", Code: "1\x00"}, ErrInvalidCode, 0, 0},
		{"invalid UTF-8", Job{ID: "a", Code: "\xff"}, ErrInvalidCode, 0, 0},
		{"negative timeout", Job{ID: "a", TimeoutMS: -1}, ErrInvalidLimits, 0, 0},
		{"timeout above max", Job{ID: "a", TimeoutMS: 31_000}, ErrInvalidLimits, 0, 0},
		{"memory above max", Job{ID: "a", MemoryMB: 512}, ErrInvalidLimits, 0, 0},
		{"memory below min", Job{ID: "a", MemoryMB: 8}, ErrInvalidLimits, 0, 0},
		{"absurd memory", Job{ID: "a", MemoryMB: 1 << 50}, ErrInvalidLimits, 0, 0},
		{"bad package name", Job{ID: "a", Packages: []string{"../x"}}, ErrMalformed, 0, 0},
		{"bad callback name", Job{ID: "a", Callbacks: []string{"a b"}}, ErrMalformed, 0, 0},
		{"network request", Job{ID: "a", Network: json.RawMessage(`{"allow":["x.example.com"]}`)}, nil, 30 * time.Second, 256 << 20},
		{"network null", Job{ID: "a", Network: json.RawMessage(`null`)}, nil, 30 * time.Second, 256 << 20},
		{"network not an object", Job{ID: "a", Network: json.RawMessage(`["x"]`)}, ErrMalformed, 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			plan, err := p.Validate(&tt.job)
			if tt.want == nil {
				if err != nil {
					t.Fatal(err)
				}
				if plan.Timeout != tt.timeout || plan.MemoryBytes != tt.memory {
					t.Errorf("plan %+v", plan)
				}
				return
			}
			if !errors.Is(err, tt.want) {
				t.Fatalf("err %v, want %v", err, tt.want)
			}
			if re, ok := AsReject(err); !ok || re.Reason == "" {
				t.Errorf("no reason in %v", err)
			}
		})
	}
}

func TestUnsupportedFeatures(t *testing.T) {
	p := Policy{}
	if _, err := p.Validate(&Job{ID: "a", Session: "s"}); !errors.Is(err, ErrUnsupported) {
		t.Errorf("session: %v", err)
	}
	if _, err := p.Validate(&Job{ID: "a", Trace: true}); !errors.Is(err, ErrUnsupported) {
		t.Errorf("trace: %v", err)
	}
}

func TestPeekID(t *testing.T) {
	for data, want := range map[string]string{
		`{"id":"x","code":5}`: "x",
		`{"id":5}`:            "",
		`{"id":"x"`:           "",
		`[]`:                  "",
	} {
		if got := PeekID([]byte(data)); got != want {
			t.Errorf("PeekID(%s) = %q, want %q", data, got, want)
		}
	}
}

func TestSubjects(t *testing.T) {
	def := Subjects{}
	acme, err := NewSubjects("acme.eryx")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct{ got, want string }{
		{def.Jobs(""), "eryx.jobs.default"},
		{def.Jobs("gpu"), "eryx.jobs.gpu"},
		{def.Event("j1", EventStdout), "eryx.job.j1.stdout"},
		{def.Event("j1", EventResult), "eryx.job.j1.result"},
		{def.JobEvents("j1"), "eryx.job.j1.*"},
		{def.Cancel("j1"), "eryx.control.cancel.j1"},
		{def.DeadLetter("default"), "eryx.dlq.default"},
		{def.JobsStream(), "ERYX_JOBS"},
		{def.EventsStream(), "ERYX_EVENTS"},
		{def.ResultsStream(), "ERYX_RESULTS"},
		{def.AllResults(), "eryx.job.*.result"},
		{def.WorkerHolds(""), "eryx.workers.default.holds"},
		{def.EventsBarrier(), "eryx.events.barrier"},
		{def.ControlStream(), "ERYX_CONTROL"},
		{def.DeadLetterStream(), "ERYX_DLQ"},
		{def.PackagesBucket(), "ERYX_PACKAGES"},
		{def.SessionsBucket(), "ERYX_SESSIONS"},
		{acme.Jobs(""), "acme.eryx.jobs.default"},
		{acme.JobsStream(), "ACME_ERYX_JOBS"},
		{MaxDeliveriesAdvisory("ERYX_JOBS", "workers-default"), "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.ERYX_JOBS.workers-default"},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("got %q, want %q", tt.got, tt.want)
		}
	}
	if id, kind, ok := def.ParseEvent("eryx.job.j1.stderr"); !ok || id != "j1" || kind != EventStderr {
		t.Errorf("ParseEvent: %q %q %v", id, kind, ok)
	}
	for _, bad := range []string{"eryx.jobs.x", "acme.job.j1.stdout", "eryx.job.j1", "eryx.job.a.b.c"} {
		if _, _, ok := def.ParseEvent(bad); ok {
			t.Errorf("ParseEvent(%q) accepted", bad)
		}
	}
	for _, bad := range []string{"a..b", "a.*", "a b", ">"} {
		if _, err := NewSubjects(bad); err == nil {
			t.Errorf("NewSubjects(%q) accepted", bad)
		}
	}
}

func TestValidateFuel(t *testing.T) {
	p := Policy{Fuel: 1000, MaxFuel: 5000}
	tests := []struct {
		name string
		fuel uint64
		want error
		plan uint64
	}{
		{"default", 0, nil, 1000},
		{"lower", 10, nil, 10},
		{"raise up to the maximum", 5000, nil, 5000},
		{"above the maximum", 5001, ErrInvalidLimits, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			plan, err := p.Validate(&Job{ID: "a", Fuel: tt.fuel})
			if !errors.Is(err, tt.want) || (tt.want == nil) != (err == nil) {
				t.Fatalf("err %v, want %v", err, tt.want)
			}
			if err == nil && plan.Fuel != tt.plan {
				t.Fatalf("plan fuel %d, want %d", plan.Fuel, tt.plan)
			}
		})
	}
}
