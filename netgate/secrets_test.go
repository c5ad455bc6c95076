package netgate

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
)

// feed pushes data through r in pieces of the given sizes, then flushes.
func feed(r *streamReplacer, data string, sizes ...int) string {
	var out bytes.Buffer
	rest := []byte(data)
	for _, n := range sizes {
		n = min(n, len(rest))
		out.Write(r.push(rest[:n]))
		rest = rest[n:]
	}
	out.Write(r.push(rest))
	out.Write(r.flush())
	return out.String()
}

func TestStreamReplacerSplitPlaceholders(t *testing.T) {
	ph := "ERYX_SECRET_0123456789abcdef0123456789abcdef"
	val := "s3cr3t-value"
	msg := "GET / HTTP/1.1\r\nAuthorization: Bearer " + ph + "\r\nX-Other: " + ph + "\r\n\r\nE"
	want := strings.ReplaceAll(msg, ph, val)
	// Every split point, in two and three pieces.
	for i := 0; i <= len(msg); i++ {
		for _, sizes := range [][]int{{i}, {i, 1}, {i, 7}} {
			var r streamReplacer
			r.set([][]byte{[]byte(ph)}, [][]byte{[]byte(val)})
			if got := feed(&r, msg, sizes...); got != want {
				t.Fatalf("split %v: %q", sizes, got)
			}
		}
	}
	// Byte by byte.
	var r streamReplacer
	r.set([][]byte{[]byte(ph)}, [][]byte{[]byte(val)})
	sizes := make([]int, len(msg))
	for i := range sizes {
		sizes[i] = 1
	}
	if got := feed(&r, msg, sizes...); got != want {
		t.Fatalf("byte by byte: %q", got)
	}
	// A near miss goes out as it is.
	near := ph[:len(ph)-1] + "X"
	var r2 streamReplacer
	r2.set([][]byte{[]byte(ph)}, [][]byte{[]byte(val)})
	if got := feed(&r2, near, 20); got != near {
		t.Fatalf("near miss: %q", got)
	}
}

func TestInboundMaskerNeverPassesAValue(t *testing.T) {
	val := "ghp_0123456789abcdefghijklmnopqrstuvwxyzAB"
	mask := "ERYX_SECRET_ffffffffffffffffffffffffffffffff"[:len(val)]
	msg := "HTTP/1.1 200 OK\r\n\r\nyou sent " + val + " and " + val + "."
	for i := 0; i <= len(msg); i++ {
		for _, second := range []int{1, 5, len(msg)} {
			var m inboundMasker
			m.set([][]byte{[]byte(val)}, [][]byte{[]byte(mask)})
			var out bytes.Buffer
			rest := []byte(msg)
			for _, n := range []int{i, second} {
				n = min(n, len(rest))
				out.Write(m.push(rest[:n]))
				rest = rest[n:]
			}
			out.Write(m.push(rest))
			got := out.String()
			if len(got) != len(msg) {
				t.Fatalf("split %d/%d: length %d, sent %d", i, second, len(got), len(msg))
			}
			// At most maskAfter-1 leading bytes of the value may show.
			if strings.Contains(got, val[:maskAfter]) {
				t.Fatalf("split %d/%d: value visible in %q", i, second, got)
			}
		}
	}
	// Data that merely starts like a value is untouched mid-stream.
	var m inboundMasker
	m.set([][]byte{[]byte(val)}, [][]byte{[]byte(mask)})
	if got := string(m.push([]byte("ghp_ is a prefix; ghp_01 too\n"))); got != "ghp_ is a prefix; ghp_01 too\n" {
		t.Fatalf("ordinary data changed: %q", got)
	}
}

func TestSecretsFromEnv(t *testing.T) {
	dir := t.TempDir()
	valueFile := dir + "/db"
	if err := os.WriteFile(valueFile, []byte("file-secret-value\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	file := dir + "/secrets.json"
	if err := os.WriteFile(file, []byte(`{"DB": {"value_file": "`+valueFile+`", "hosts": ["db.internal:5432"], "plaintext": true},
		"API": {"value_env": "API_VALUE", "hosts": ["api.example.com"]}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{
		EnvSecrets:     "GITHUB_TOKEN=api.github.com,*.github.com; OTHER=203.0.113.7:8443",
		"GITHUB_TOKEN": "ghp_abcdefgh12345678",
		"OTHER":        "other-secret",
		"API_VALUE":    "api-secret-value",
		EnvSecretsFile: file,
	}
	s, err := SecretsFromEnv(func(k string) string { return env[k] }, os.ReadFile)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(s.Names(), ","); got != "API,DB,GITHUB_TOKEN,OTHER" {
		t.Fatalf("names %s", got)
	}
	if string(s.byName["DB"].value) != "file-secret-value" || !s.byName["DB"].plaintext {
		t.Fatalf("DB %+v", s.byName["DB"])
	}
	if none, err := SecretsFromEnv(func(string) string { return "" }, os.ReadFile); none != nil || err != nil {
		t.Fatalf("empty environment: %v %v", none, err)
	}

	bad := []struct {
		name string
		env  map[string]string
	}{
		{"unset value", map[string]string{EnvSecrets: "NOPE=api.github.com"}},
		{"no hosts", map[string]string{EnvSecrets: "A=", "A": "long-enough"}},
		{"any host", map[string]string{EnvSecrets: "A=*", "A": "long-enough"}},
		{"range", map[string]string{EnvSecrets: "A=10.0.0.0/8", "A": "long-enough"}},
		{"short value", map[string]string{EnvSecrets: "A=h.example", "A": "short"}},
		{"bad name", map[string]string{EnvSecrets: "1A=h.example", "1A": "long-enough"}},
		{"no equals", map[string]string{EnvSecrets: "A"}},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := SecretsFromEnv(func(k string) string { return tt.env[k] }, os.ReadFile); !errors.Is(err, ErrInvalidSecret) {
				t.Fatalf("err = %v", err)
			}
		})
	}
}

func TestBindAndRedact(t *testing.T) {
	long := strings.Repeat("v", 60)
	s, err := NewSecrets([]SecretSpec{
		{Name: "SHORT", Value: []byte("short-value"), Hosts: []string{"a.example"}},
		{Name: "LONG", Value: []byte(long), Hosts: []string{"b.example"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Bind([]string{"NOPE"}); !errors.Is(err, ErrUnknownSecret) {
		t.Fatalf("unknown: %v", err)
	}
	j1, _ := s.Bind([]string{"SHORT", "LONG"})
	j2, _ := s.Bind([]string{"SHORT"})
	e1, e2 := j1.Env(), j2.Env()
	if e1["SHORT"] == e2["SHORT"] || !strings.HasPrefix(e1["SHORT"], placeholderPrefix) || len(e1["SHORT"]) != placeholderLen {
		t.Fatalf("placeholders %q %q", e1["SHORT"], e2["SHORT"])
	}
	if len(e1["LONG"]) != len(long) {
		t.Fatalf("a long value's placeholder is %d bytes, the value %d", len(e1["LONG"]), len(long))
	}
	if str := fmt.Sprintf("%v %+v %#v", s.byName["SHORT"], s.byName["SHORT"], s.byName["SHORT"]); strings.Contains(str, "short-value") {
		t.Fatalf("formatting shows the value: %s", str)
	}
	got := j1.Redact("token " + e1["SHORT"] + " value short-value long " + e1["LONG"])
	if got != "token [REDACTED:SHORT] value [REDACTED:SHORT] long [REDACTED:LONG]" {
		t.Fatalf("redacted: %q", got)
	}
}
