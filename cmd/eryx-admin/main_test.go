package main

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/eryx-dev/eryx/internal/testenv"
	"github.com/eryx-dev/eryx/jobs"
)

func admin(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(context.Background(), args, &out, &errb)
	return out.String(), errb.String(), code
}

func TestPermissionsCommand(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want []string
		code int
	}{
		{[]string{"permissions", "--role", "submitter", "--tenant", "acme"}, []string{"permissions {", `"eryx.jobs.*.acme"`, `"eryx.t.acme.job.>"`, `"$JS.EVENT.>"`}, 0},
		{[]string{"permissions", "--role", "worker", "--queue", "gpu", "--prefix", "x"}, []string{`"$JS.ACK.X_JOBS.>"`, `"x.workers.gpu.holds"`, "allow_responses"}, 0},
		{[]string{"permissions", "--role", "callback", "--callbacks", "add,clock"}, []string{`"eryx.cb.add"`, `"eryx.cb.clock"`}, 0},
		{[]string{"permissions", "--role", "auth"}, []string{`"$SYS.REQ.USER.AUTH"`}, 0},
		{[]string{"permissions", "--role", "submitter", "--tenant", "Bad.Name"}, nil, 1},
		{[]string{"permissions", "--role", "root"}, nil, 1},
	} {
		out, _, code := admin(t, tc.args...)
		if code != tc.code {
			t.Errorf("%v: exit %d, want %d", tc.args, code, tc.code)
		}
		for _, w := range tc.want {
			if !strings.Contains(out, w) {
				t.Errorf("%v: no %s in\n%s", tc.args, w, out)
			}
		}
	}
}

func TestIssuerAndConfig(t *testing.T) {
	out, _, code := admin(t, "issuer")
	if code != 0 {
		t.Fatal(out)
	}
	lines := strings.Split(out, "\n")
	pub := lines[1]
	conf, errs, code := admin(t, "nats-config", "--issuer", pub)
	if code != 0 || !strings.Contains(conf, "auth_callout") || !strings.Contains(conf, "password: $AUTH_PASSWORD") {
		t.Fatalf("%d %s %s", code, conf, errs)
	}
	if _, _, code := admin(t, "nats-config", "--issuer", "nope"); code == 0 {
		t.Fatal("bad issuer accepted")
	}
}

func TestTenantsAndKeys(t *testing.T) {
	url := testenv.NATS(t)
	c := []string{"--nats", url}
	if out, errs, code := admin(t, append([]string{"tenant", "add", "acme", "--max-running", "3"}, c...)...); code != 0 {
		t.Fatalf("%s %s", out, errs)
	}
	// Its files bucket exists, sized by the operator, before any job.
	checkFilesBucket(t, url, "ERYX_FILES_acme", jobs.DefaultFilesBucketBytes)
	if out, errs, code := admin(t, append([]string{"tenant", "add", "small", "--files-max-mib", "2", "--files-ttl", "1h"}, c...)...); code != 0 || !strings.Contains(out, "files bucket ERYX_FILES_small ready") {
		t.Fatalf("%s %s", out, errs)
	}
	checkFilesBucket(t, url, "ERYX_FILES_small", 2<<20)
	if _, errs, code := admin(t, append([]string{"tenant", "add", "acme"}, c...)...); code == 0 || !strings.Contains(errs, "exists") {
		t.Fatalf("duplicate tenant: %s", errs)
	}
	out, _, _ := admin(t, append([]string{"tenant", "ls"}, c...)...)
	if !strings.Contains(out, "acme") || !strings.Contains(out, " 3 ") {
		t.Fatalf("tenant ls:\n%s", out)
	}
	key, errs, code := admin(t, append([]string{"key", "issue", "--role", "submitter", "--tenant", "acme"}, c...)...)
	if code != 0 || !strings.HasPrefix(key, "eryx_") {
		t.Fatalf("key issue: %s %s", key, errs)
	}
	id := strings.Split(key, "_")[1]
	out, _, _ = admin(t, append([]string{"key", "ls"}, c...)...)
	if !strings.Contains(out, id) || strings.Contains(out, strings.TrimSpace(key)) {
		t.Fatalf("key ls shows the id, never the key:\n%s", out)
	}
	if _, errs, code := admin(t, append([]string{"key", "revoke", id}, c...)...); code != 0 {
		t.Fatal(errs)
	}
	if _, _, code := admin(t, append([]string{"key", "revoke", id}, c...)...); code == 0 {
		t.Fatal("revoked twice")
	}
	if _, errs, code := admin(t, append([]string{"tenant", "rm", "acme"}, c...)...); code != 0 {
		t.Fatal(errs)
	}
	if _, _, code := admin(t, append([]string{"key", "issue", "--role", "submitter", "--tenant", "acme"}, c...)...); code == 0 {
		t.Fatal("key for a removed tenant")
	}
}

func checkFilesBucket(t *testing.T, url, bucket string, maxBytes int64) {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	st, err := js.Stream(context.Background(), "OBJ_"+bucket)
	if err != nil {
		t.Fatalf("files bucket %s: %v", bucket, err)
	}
	if cfg := st.CachedInfo().Config; cfg.MaxBytes != maxBytes {
		t.Fatalf("%s holds %d bytes, want %d", bucket, cfg.MaxBytes, maxBytes)
	}
}
