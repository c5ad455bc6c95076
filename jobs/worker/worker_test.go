package worker_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/eryx-dev/eryx/jobs"
)

func TestSubmitStreamsOutputAndResult(t *testing.T) {
	nc := connect(t, startServer(t))
	startWorker(t, nc, testConfig("w1"))
	c := newClient(t, nc)

	out := newOutput()
	var sawOutputBeforeResult bool
	h := out.handlers()
	inner := h.Output
	h.Output = func(k jobs.EventKind, b []byte) { inner(k, b); sawOutputBeforeResult = true }
	res := runJob(t, c, &jobs.Job{
		ID:   "hello",
		Code: "import sys\nprint('hello')\nprint('oops', file=sys.stderr)\nresult = {'answer': 42}",
	}, h)

	if res.Status != jobs.StatusOK {
		t.Fatalf("status %s (%+v)", res.Status, res.Error)
	}
	if res.Stdout != "hello\n" || res.Stderr != "oops\n" {
		t.Errorf("result stdout %q stderr %q", res.Stdout, res.Stderr)
	}
	if stdout, stderr := out.String(); stdout != "hello\n" || stderr != "oops\n" {
		t.Errorf("live stdout %q stderr %q", stdout, stderr)
	}
	if !sawOutputBeforeResult {
		t.Error("no live output before the result")
	}
	var value map[string]int
	if err := json.Unmarshal(res.Result, &value); err != nil || value["answer"] != 42 {
		t.Errorf("result value %s (%v)", res.Result, err)
	}
	if res.V != jobs.Version || res.ID != "hello" || res.Worker != "w1" || res.Attempt != 1 {
		t.Errorf("envelope: %+v", res)
	}
	if res.Stats.DurationMS <= 0 || res.FinishedAt.IsZero() {
		t.Errorf("stats: %+v finished %v", res.Stats, res.FinishedAt)
	}
}

func TestOutcomes(t *testing.T) {
	nc := connect(t, startServer(t))
	startWorker(t, nc, testConfig("w1"))
	c := newClient(t, nc)

	tests := []struct {
		name      string
		job       jobs.Job
		status    jobs.Status
		errType   string
		exitCode  int // -1: none
		wantInOut string
	}{
		{"ok", jobs.Job{Code: "print(6*7)"}, jobs.StatusOK, "", -1, "42"},
		{"exception", jobs.Job{Code: "x = 1\nraise ValueError('bad value')"}, jobs.StatusError, "ValueError", -1, ""},
		{"syntax error", jobs.Job{Code: "def ("}, jobs.StatusError, "SyntaxError", -1, ""},
		{"exit zero", jobs.Job{Code: "import sys\nprint('bye')\nsys.exit(0)"}, jobs.StatusOK, "", 0, "bye"},
		{"exit non-zero", jobs.Job{Code: "import sys\nsys.exit(3)"}, jobs.StatusError, "SystemExit", 3, ""},
		{"timeout", jobs.Job{Code: "while True: pass", TimeoutMS: 300}, jobs.StatusTimeout, "", -1, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			job := tt.job
			res := runJob(t, c, &job, jobs.Handlers{})
			if res.Status != tt.status {
				t.Fatalf("status %s, want %s (error %+v)", res.Status, tt.status, res.Error)
			}
			if tt.errType != "" && (res.Error == nil || res.Error.Type != tt.errType) {
				t.Errorf("error %+v, want type %s", res.Error, tt.errType)
			}
			if tt.exitCode >= 0 && (res.ExitCode == nil || *res.ExitCode != tt.exitCode) {
				t.Errorf("exit code %v, want %d", res.ExitCode, tt.exitCode)
			}
			if !strings.Contains(res.Stdout, tt.wantInOut) {
				t.Errorf("stdout %q, want %q in it", res.Stdout, tt.wantInOut)
			}
		})
	}
}

func TestRejections(t *testing.T) {
	nc := connect(t, startServer(t))
	startWorker(t, nc, testConfig("w1"))
	c := newClient(t, nc)
	js, _ := jetstream.New(nc)
	ctx := context.Background()

	big := strings.Repeat("x", 70<<10)
	tests := []struct {
		name string
		data string
		// msgID is the Nats-Msg-Id header; empty for none.
		msgID string
		// wantID is the id the answer comes under; "seq" for invalid-<n>.
		wantID string
		code   jobs.RejectCode
	}{
		// Not a well-formed job: never answered under an id read from it.
		{"truncated JSON", `{"id":"m1","code":`, "", "seq", jobs.CodeMalformed},
		{"malformed, id in header", `not json at all`, "m2", "seq", jobs.CodeMalformed},
		{"malformed, no id anywhere", `{{{`, "", "seq", jobs.CodeMalformed},
		{"unknown field", `{"id":"m3","code":"1","timeout":5}`, "", "seq", jobs.CodeMalformed},
		{"unknown field, victim's id", `{"id":"victim","x":1}`, "victim", "seq", jobs.CodeMalformed},
		{"wrong type", `{"id":"m4","code":1}`, "", "seq", jobs.CodeMalformed},
		{"too large message", `{"id":"big1","code":"` + big + `"}`, "", "seq", jobs.CodeTooLarge},
		{"id not a token", `{"id":"a.b","code":"1"}`, "idhdr", "seq", jobs.CodeInvalidID},
		{"Nats-Msg-Id differs from id", `{"id":"mine","code":"1"}`, "victim2", "seq", jobs.CodeInvalidID},
		// Well-formed: answered under its id.
		{"bare id as Nats-Msg-Id (v1)", `{"id":"mine2","code":"1"}`, "mine2", "seq", jobs.CodeInvalidID},
		{"matching Nats-Msg-Id", `{"id":"hdr-ok","code":"1","memory_mb":1}`, "default.hdr-ok", "hdr-ok", jobs.CodeInvalidLimits},
		{"newer version", `{"v":9,"id":"v9","code":"1"}`, "", "v9", jobs.CodeUnsupportedVersion},
		{"memory above maximum", `{"id":"mem1","code":"1","memory_mb":4096}`, "", "mem1", jobs.CodeInvalidLimits},
		{"memory below minimum", `{"id":"mem2","code":"1","memory_mb":1}`, "", "mem2", jobs.CodeInvalidLimits},
		{"negative timeout", `{"id":"t1","code":"1","timeout_ms":-5}`, "", "t1", jobs.CodeInvalidLimits},
		{"timeout above maximum", `{"id":"t2","code":"1","timeout_ms":3600000}`, "", "t2", jobs.CodeInvalidLimits},
		{"NUL in code", `{"id":"nul","code":"print(1)\u0000"}`, "", "nul", jobs.CodeInvalidCode},
		{"unknown package", `{"id":"pkg","code":"1","packages":["nope"]}`, "", "pkg", jobs.CodeUnknownPackage},
		{"network beyond policy", `{"id":"net","code":"1","network":{"allow":["example.com:443"]}}`, "", "net", jobs.CodeNotAllowed},
		{"session unsupported", `{"id":"sess","code":"1","session":"s1"}`, "", "sess", jobs.CodeUnsupported},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			msg := &nats.Msg{Subject: "eryx.jobs.default.default", Data: []byte(tt.data), Header: nats.Header{}}
			if tt.msgID != "" {
				msg.Header.Set(jobs.HeaderMsgID, tt.msgID)
			}
			ack, err := js.PublishMsg(ctx, msg)
			if err != nil {
				t.Fatal(err)
			}
			id := tt.wantID
			if id == "seq" {
				id = "invalid-" + itoa(ack.Sequence)
			}
			res := waitResult(t, c, id)
			if res.Status != jobs.StatusRejected || res.Code != tt.code {
				t.Fatalf("got %s/%s (%s), want rejected/%s", res.Status, res.Code, res.Reason, tt.code)
			}
			if res.Reason == "" || res.ID != id {
				t.Errorf("reason %q id %q", res.Reason, res.ID)
			}
		})
	}

	// No answer went out under an id read from a rejected message.
	for _, id := range []string{"m1", "m2", "m3", "victim", "m4", "big1", "mine", "victim2"} {
		if _, err := c.Lookup(ctx, id); !errors.Is(err, jobs.ErrNoResult) {
			t.Errorf("job %s: %v, want no result", id, err)
		}
	}

	// The worker survived all of that.
	if res := runJob(t, c, &jobs.Job{Code: "print('still here')"}, jobs.Handlers{}); res.Status != jobs.StatusOK {
		t.Fatalf("after rejections: %s", res.Status)
	}
}

func itoa(n uint64) string {
	b, _ := json.Marshal(n)
	return string(b)
}
