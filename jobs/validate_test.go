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
		{"all fields", `{"v":2,"id":"a","tenant":"acme","code":"1","session":"s","timeout_ms":5,"memory_mb":64,"trace":true,"packages":["p"],"callbacks":[],"network":{"allow":[]}}`, 0, nil},
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
		{"newer version", Job{V: Version + 1, ID: "a"}, ErrUnsupportedVersion, 0, 0},
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
		{def.Jobs("", ""), "eryx.jobs.default.default"},
		{def.Jobs("gpu", "acme"), "eryx.jobs.gpu.acme"},
		{def.QueueJobs("gpu"), "eryx.jobs.gpu.*"},
		{def.AllJobs(), "eryx.jobs.*.*"},
		{def.TenantPrefix("acme"), "eryx.t.acme"},
		{def.Event("acme", "j1", EventStdout), "eryx.t.acme.job.j1.stdout"},
		{def.Event("acme", "j1", EventResult), "eryx.t.acme.job.j1.result"},
		{def.JobEvents("acme", "j1"), "eryx.t.acme.job.j1.*"},
		{def.Cancel("acme", "j1"), "eryx.t.acme.cancel.j1"},
		{def.AllCancels(), "eryx.t.*.cancel.*"},
		{def.DeadLetter("default", "acme"), "eryx.dlq.default.acme"},
		{def.AllDeadLetters(), "eryx.dlq.*.*"},
		{def.JobsStream(), "ERYX_JOBS"},
		{def.EventsStream(), "ERYX_EVENTS"},
		{def.ResultsStream(), "ERYX_RESULTS"},
		{def.AllResults(), "eryx.t.*.job.*.result"},
		{def.WorkerHolds(""), "eryx.workers.default.holds"},
		{def.EventsBarrier(), "eryx.events.barrier"},
		{def.ControlStream(), "ERYX_CONTROL"},
		{def.DeadLetterStream(), "ERYX_DLQ"},
		{def.PackagesBucket(), "ERYX_PACKAGES"},
		{def.SessionsBucket(), "ERYX_SESSIONS"},
		{SessionKey("acme", "s1"), "acme.s1"},
		{PackageObject("acme", "lib"), "acme/lib"},
		{PackageObject(PlatformTenant, "lib"), "_platform/lib"},
		{acme.Jobs("", ""), "acme.eryx.jobs.default.default"},
		{acme.JobsStream(), "ACME_ERYX_JOBS"},
		{MaxDeliveriesAdvisory("ERYX_JOBS", "workers-default"), "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.ERYX_JOBS.workers-default"},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("got %q, want %q", tt.got, tt.want)
		}
	}
	if tenant, id, kind, ok := def.ParseEvent("eryx.t.acme.job.j1.stderr"); !ok || tenant != "acme" || id != "j1" || kind != EventStderr {
		t.Errorf("ParseEvent: %q %q %q %v", tenant, id, kind, ok)
	}
	for _, bad := range []string{"eryx.jobs.x", "acme.t.a.job.j1.stdout", "eryx.t.a.job.j1", "eryx.t.a.job.a.b.c", "eryx.job.j1.stdout", "eryx.t.A.job.j1.stdout"} {
		if _, _, _, ok := def.ParseEvent(bad); ok {
			t.Errorf("ParseEvent(%q) accepted", bad)
		}
	}
	if q, tenant, ok := def.ParseJobs("eryx.jobs.gpu.acme"); !ok || q != "gpu" || tenant != "acme" {
		t.Errorf("ParseJobs: %q %q %v", q, tenant, ok)
	}
	for _, bad := range []string{"eryx.jobs.gpu", "eryx.jobs.gpu.Acme", "eryx.jobs.gpu.a.b", "eryx.jobs.gpu._platform"} {
		if _, _, ok := def.ParseJobs(bad); ok {
			t.Errorf("ParseJobs(%q) accepted", bad)
		}
	}
	if tenant, id, ok := def.ParseCancel("eryx.t.acme.cancel.j1"); !ok || tenant != "acme" || id != "j1" {
		t.Errorf("ParseCancel: %q %q %v", tenant, id, ok)
	}
	for _, bad := range []string{"eryx.control.cancel.j1", "eryx.t.acme.cancel.a.b", "eryx.t..cancel.j1"} {
		if _, _, ok := def.ParseCancel(bad); ok {
			t.Errorf("ParseCancel(%q) accepted", bad)
		}
	}
	for _, bad := range []string{"a..b", "a.*", "a b", ">"} {
		if _, err := NewSubjects(bad); err == nil {
			t.Errorf("NewSubjects(%q) accepted", bad)
		}
	}
}

func TestValidTenant(t *testing.T) {
	for _, ok := range []string{"default", "a", "acme-corp", "t_1", "0abc", strings.Repeat("a", 63)} {
		if err := ValidTenant(ok); err != nil {
			t.Errorf("ValidTenant(%q): %v", ok, err)
		}
	}
	for _, bad := range []string{"", "Acme", "_platform", "-a", "a.b", "a*", "a>", "a b", strings.Repeat("a", 64), "é"} {
		if err := ValidTenant(bad); !errors.Is(err, ErrInvalidTenant) {
			t.Errorf("ValidTenant(%q) = %v, want ErrInvalidTenant", bad, err)
		}
	}
}

func TestCheckTenant(t *testing.T) {
	tests := []struct {
		field, subject string
		ok             bool
	}{
		{"", "acme", true},
		{"acme", "acme", true},
		{"other", "acme", false},
		{"default", "acme", false},
	}
	for _, tt := range tests {
		err := CheckTenant(&Job{Tenant: tt.field}, tt.subject)
		if (err == nil) != tt.ok || (err != nil && !errors.Is(err, ErrTenantMismatch)) {
			t.Errorf("CheckTenant(%q on %q) = %v", tt.field, tt.subject, err)
		}
	}
}

func TestParsePackageRef(t *testing.T) {
	sum := strings.Repeat("ab", 32)
	tests := []struct {
		in   string
		want PackageRef
		ok   bool
	}{
		{"lib", PackageRef{Name: "lib"}, true},
		{"lib@sha256:" + sum, PackageRef{Name: "lib", SHA256: sum}, true},
		{"lib@sha256:" + strings.ToUpper(sum), PackageRef{Name: "lib", SHA256: sum}, true},
		{"lib@sha256:abc", PackageRef{}, false},
		{"lib@sha256:" + strings.Repeat("zz", 32), PackageRef{}, false},
		{"lib@md5:" + sum, PackageRef{}, false},
		{"../lib", PackageRef{}, false},
		{"a/b", PackageRef{}, false},
	}
	for _, tt := range tests {
		got, err := ParsePackageRef(tt.in)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("ParsePackageRef(%q) = %+v, %v", tt.in, got, err)
		}
		if tt.ok && got.String() != strings.ToLower(tt.in) {
			t.Errorf("String() = %q, want %q", got.String(), tt.in)
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
