package worker

import (
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/eryx-dev/eryx/jobs"
)

func TestEncodeResultFitsTheLimit(t *testing.T) {
	const limit = 8 << 10
	tests := []struct {
		name string
		res  jobs.Result
	}{
		{"small", jobs.Result{ID: "a", Status: jobs.StatusOK, Stdout: "hi\n"}},
		{"huge stdout", jobs.Result{ID: "a", Status: jobs.StatusOK, Stdout: strings.Repeat("x", 100<<10), Stderr: "warn\n"}},
		{"huge both", jobs.Result{ID: "a", Status: jobs.StatusOK, Stdout: strings.Repeat("o", 50<<10), Stderr: strings.Repeat("e", 50<<10)}},
		{"escaping", jobs.Result{ID: "a", Status: jobs.StatusOK, Stdout: strings.Repeat("\x01", 20<<10)}},
		{"multibyte", jobs.Result{ID: "a", Status: jobs.StatusOK, Stdout: strings.Repeat("é", 20<<10)}},
		{"huge value", jobs.Result{ID: "a", Status: jobs.StatusOK, Result: json.RawMessage(`"` + strings.Repeat("v", 50<<10) + `"`)}},
		{"huge traceback", jobs.Result{ID: "a", Status: jobs.StatusError, Error: &jobs.ErrorInfo{Type: "E", Traceback: strings.Repeat("t", 50<<10)}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			data, err := encodeResult(&tt.res, limit)
			if err != nil {
				t.Fatal(err)
			}
			if len(data) > limit {
				t.Fatalf("%d bytes, limit %d", len(data), limit)
			}
			var got jobs.Result
			if err := json.Unmarshal(data, &got); err != nil {
				t.Fatal(err)
			}
			if !utf8.ValidString(got.Stdout) {
				t.Error("stdout cut inside a rune")
			}
			if got.StdoutTruncated != (len(got.Stdout) < len(tt.res.Stdout)) {
				t.Errorf("stdout %d of %d bytes, truncated flag %v", len(got.Stdout), len(tt.res.Stdout), got.StdoutTruncated)
			}
			if got.StderrTruncated != (len(got.Stderr) < len(tt.res.Stderr)) {
				t.Errorf("stderr %d of %d bytes, truncated flag %v", len(got.Stderr), len(tt.res.Stderr), got.StderrTruncated)
			}
			if tt.res.Stderr == "warn\n" && got.Stderr != "warn\n" {
				t.Error("short stderr was cut")
			}
		})
	}
}
