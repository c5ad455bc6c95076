package worker_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/eryx-dev/eryx/internal/testenv"
	"github.com/eryx-dev/eryx/jobs"
	"github.com/eryx-dev/eryx/jobs/worker"
)

const salesCSV = "region,amount\nnorth,10\nsouth,4\nnorth,5\neast,7\nsouth,1\n"

// summaryCode reads the sales, prints a total and writes a summary and a
// chart-like file; the expected bytes are computed below, independently.
const summaryCode = `import csv, collections, hashlib
totals = collections.Counter()
with open('/data/sales.csv', newline='') as f:
    for row in csv.DictReader(f):
        totals[row['region']] += int(row['amount'])
with open('/output/summary.csv', 'w', newline='') as f:
    w = csv.writer(f, lineterminator='\n')
    w.writerow(['region', 'total'])
    for region in sorted(totals):
        w.writerow([region, totals[region]])
import os
os.makedirs('/output/charts')
with open('/output/charts/bars.svg', 'w') as f:
    f.write('<svg>' + ''.join(f'<rect id="{r}" width="{totals[r]}"/>' for r in sorted(totals)) + '</svg>')
print('total', sum(totals.values()), hashlib.sha256(open('/data/sales.csv', 'rb').read()).hexdigest())
`

const (
	wantSummary = "region,total\neast,7\nnorth,15\nsouth,5\n"
	wantChart   = `<svg><rect id="east" width="7"/><rect id="north" width="15"/><rect id="south" width="5"/></svg>`
)

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func writeLocal(t *testing.T, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func upload(t *testing.T, c *jobs.Client, data []byte) string {
	t.Helper()
	name, err := c.UploadFile(context.Background(), writeLocal(t, "in", data))
	if err != nil {
		t.Fatal(err)
	}
	return name
}

// A CSV in, a computed summary and a generated file out, byte for byte,
// with their listing in the result; the upload is content-addressed.
func TestFilesCSVInSummaryOut(t *testing.T) {
	url := startServer(t)
	nc := connect(t, url)
	startWorker(t, nc, testConfig("w1"))
	c := filesClient(t, connect(t, url), jobs.DefaultTenant)
	name := upload(t, c, []byte(salesCSV))
	if name != jobs.ContentAddressedName(sha([]byte(salesCSV))) {
		t.Fatalf("uploaded as %q", name)
	}
	if again := upload(t, c, []byte(salesCSV)); again != name {
		t.Fatalf("second upload named %q", again)
	}

	res := runJob(t, c, &jobs.Job{Code: summaryCode, Files: map[string]string{"data/sales.csv": name}}, jobs.Handlers{})
	if res.Status != jobs.StatusOK {
		t.Fatalf("status %s: %+v %s %s", res.Status, res.Error, res.Code, res.Reason)
	}
	if want := "total 27 " + sha([]byte(salesCSV)) + "\n"; res.Stdout != want {
		t.Fatalf("stdout %q, want %q", res.Stdout, want)
	}
	want := map[string]struct{ data, ct string }{
		"summary.csv":     {wantSummary, "text/csv; charset=utf-8"},
		"charts/bars.svg": {wantChart, "image/svg+xml"},
	}
	if len(res.Files) != len(want) || res.FilesError != "" || res.FilesLimit != "" {
		t.Fatalf("files %+v, error %q, limit %q", res.Files, res.FilesError, res.FilesLimit)
	}
	for _, f := range res.Files {
		w, ok := want[f.Path]
		if !ok || f.Size != int64(len(w.data)) || f.SHA256 != sha([]byte(w.data)) || f.ContentType != w.ct ||
			f.Object != res.ID+"/"+f.Path || f.Bucket != "ERYX_FILES_default" || f.Partial {
			t.Errorf("listed %+v", f)
		}
	}
	dir := t.TempDir()
	paths, err := c.DownloadOutputs(context.Background(), res, dir)
	if err != nil || len(paths) != 2 {
		t.Fatalf("download: %v %v", paths, err)
	}
	for p, w := range want {
		got, err := os.ReadFile(filepath.Join(dir, filepath.FromSlash(p)))
		if err != nil || string(got) != w.data {
			t.Errorf("%s: %q %v, want %q", p, got, err, w.data)
		}
	}
	// A job's outputs are files of its tenant, and inputs of the next job.
	var buf bytes.Buffer
	if _, err := c.GetFile(context.Background(), res.ID+"/summary.csv", &buf); err != nil || buf.String() != wantSummary {
		t.Fatalf("get: %q %v", buf.String(), err)
	}
	res2 := runJob(t, c, &jobs.Job{Code: "print(open('/data/prev.csv').read(), end='')",
		Files: map[string]string{"data/prev.csv": res.ID + "/summary.csv"}}, jobs.Handlers{})
	if res2.Status != jobs.StatusOK || res2.Stdout != wantSummary {
		t.Fatalf("chained: %s %q %s", res2.Status, res2.Stdout, res2.Reason)
	}
}

// The same job on another worker gets the same inputs: files live in the
// bucket, not on a worker.
func TestFilesSameInputsOnAnotherWorker(t *testing.T) {
	url := startServer(t)
	nc := connect(t, url)
	c := filesClient(t, connect(t, url), jobs.DefaultTenant)
	data := bytes.Repeat([]byte("0123456789abcdef"), 40_000) // 640,000 bytes, several chunks
	var files map[string]string
	code := "import hashlib\nprint(hashlib.sha256(open('/data/blob.bin','rb').read()).hexdigest())\nopen('/output/copy.bin','wb').write(open('/data/blob.bin','rb').read())"
	var outputs []string
	for _, id := range []string{"w1", "w2"} {
		w := startWorker(t, nc, testConfig(id))
		if files == nil { // the first worker created the bucket
			files = map[string]string{"data/blob.bin": upload(t, c, data)}
		}
		res := runJob(t, c, &jobs.Job{Code: code, Files: files}, jobs.Handlers{})
		if res.Status != jobs.StatusOK || res.Worker != id || res.Stdout != sha(data)+"\n" {
			t.Fatalf("%s: %s on %s: %q %+v", id, res.Status, res.Worker, res.Stdout, res.Error)
		}
		if len(res.Files) != 1 || res.Files[0].SHA256 != sha(data) {
			t.Fatalf("%s: files %+v", id, res.Files)
		}
		outputs = append(outputs, res.Files[0].SHA256)
		if err := w.stop(); err != nil {
			t.Fatal(err)
		}
	}
	if outputs[0] != outputs[1] {
		t.Fatalf("outputs differ: %v", outputs)
	}
}

func filesConfig(id string) worker.Config {
	cfg := testConfig(id)
	cfg.FileMaxBytes = 256 << 10
	cfg.FilesMaxBytes = 400 << 10
	cfg.Policy.MaxFiles = 3
	cfg.Policy.MaxJobBytes = 64 << 10
	return cfg
}

// Inputs at the caps run; one byte over, by a file, by all of them or by
// their number, is rejected naming the limit before anything is fetched.
func TestFilesInputCaps(t *testing.T) {
	url := startServer(t)
	nc := connect(t, url)
	startWorker(t, nc, filesConfig("w1"))
	c := filesClient(t, connect(t, url), jobs.DefaultTenant)
	atCap := upload(t, c, bytes.Repeat([]byte("a"), 256<<10))
	overCap := upload(t, c, bytes.Repeat([]byte("b"), 256<<10+1))
	half := upload(t, c, bytes.Repeat([]byte("c"), 201<<10))
	small := upload(t, c, []byte("s"))

	res := runJob(t, c, &jobs.Job{Code: "import os\nprint(len(open('/data/a','rb').read()), os.stat('/data/b').st_size)",
		Files: map[string]string{"data/a": atCap, "data/b": small}}, jobs.Handlers{})
	if res.Status != jobs.StatusOK || res.Stdout != "262144 1\n" {
		t.Fatalf("at the cap: %s %q %s", res.Status, res.Stdout, res.Reason)
	}
	tests := []struct {
		name  string
		files map[string]string
		code  jobs.RejectCode
		has   string
	}{
		{"one file over", map[string]string{"data/big": overCap}, jobs.CodeTooLarge, "file_bytes"},
		{"all over", map[string]string{"data/1": half, "data/2": half}, jobs.CodeTooLarge, "files_bytes"},
		{"too many", map[string]string{"data/1": small, "data/2": small, "data/3": small, "data/4": small}, jobs.CodeTooLarge, "files_count"},
		{"missing", map[string]string{"data/sales.csv": "nope.csv"}, jobs.CodeFileNotFound, `data/sales.csv: no object "nope.csv"`},
		{"pinned, other content", map[string]string{"data/s": small + "@sha256:" + strings.Repeat("0", 64)}, jobs.CodeFileMismatch, "pins"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := runJob(t, c, &jobs.Job{Code: "print('ran')", Files: tt.files}, jobs.Handlers{})
			if res.Status != jobs.StatusRejected || res.Code != tt.code || !strings.Contains(res.Reason, tt.has) {
				t.Fatalf("%s %s %q, want rejected %s naming %q", res.Status, res.Code, res.Reason, tt.code, tt.has)
			}
		})
	}
	// The worker goes on serving.
	if res := runJob(t, c, &jobs.Job{Code: "print('still here')"}, jobs.Handlers{}); res.Stdout != "still here\n" {
		t.Fatalf("after: %+v", res)
	}
}

// Paths and names from a job cannot escape: not the guest path, not the
// object name, not the tenant.
func TestFilesEscapingPathsRefused(t *testing.T) {
	url := startServer(t)
	nc := connect(t, url)
	startWorker(t, nc, filesConfig("w1"))
	alice := filesClient(t, connect(t, url), "alice")
	bob := filesClient(t, connect(t, url), "bob")
	if _, err := alice.PutFile(context.Background(), "secret.txt", strings.NewReader("alice's")); err != nil {
		t.Fatal(err)
	}
	ok := upload(t, bob, []byte("x"))
	tests := []struct {
		name  string
		files map[string]string
		code  jobs.RejectCode
	}{
		{"dot-dot key", map[string]string{"data/../etc/passwd": ok}, jobs.CodeInvalidPath},
		{"key outside data", map[string]string{"tmp/x": ok}, jobs.CodeInvalidPath},
		{"absolute key", map[string]string{"/data/x": ok}, jobs.CodeInvalidPath},
		{"NUL in key", map[string]string{"data/a\x00b": ok}, jobs.CodeInvalidPath},
		{"long key", map[string]string{"data/" + strings.Repeat("x", 256): ok}, jobs.CodeInvalidPath},
		{"longer path", map[string]string{"data/" + strings.Repeat("d/", 520) + "x": ok}, jobs.CodeInvalidPath},
		{"empty component", map[string]string{"data//x": ok}, jobs.CodeInvalidPath},
		{"file is a directory", map[string]string{"data/a": ok, "data/a/b": ok}, jobs.CodeInvalidPath},
		{"dot-dot object", map[string]string{"data/x": "../alice/secret.txt"}, jobs.CodeInvalidPath},
		{"absolute object", map[string]string{"data/x": "/alice/secret.txt"}, jobs.CodeInvalidPath},
		// Valid, but relative to bob: "bob/alice/secret.txt" does not exist.
		{"other tenant's object", map[string]string{"data/x": "alice/secret.txt"}, jobs.CodeFileNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := runJob(t, bob, &jobs.Job{Code: "print('ran')", Files: tt.files}, jobs.Handlers{})
			if res.Status != jobs.StatusRejected || res.Code != tt.code {
				t.Fatalf("%s %s %q, want rejected %s", res.Status, res.Code, res.Reason, tt.code)
			}
			if len(res.Reason) > 400 {
				t.Fatalf("reason of %d bytes", len(res.Reason))
			}
		})
	}
}

// /output over its caps: writes are refused, the result names the limit,
// the files that fitted and the job's other results are intact.
func TestFilesOutputCaps(t *testing.T) {
	url := startServer(t)
	nc := connect(t, url)
	cfg := filesConfig("w1")
	cfg.OutputFilesBytes = 64 << 10
	cfg.OutputFiles = 4
	startWorker(t, nc, cfg)
	c := filesClient(t, connect(t, url), jobs.DefaultTenant)
	tests := []struct {
		name, code, limit string
		files             int
	}{
		{"bytes", `open('/output/ok.txt', 'w').write('fits')
try:
    open('/output/big.bin', 'wb').write(b'x' * (65 << 10))
except OSError as e:
    print('refused', e.errno)
result = {'done': True}`, "output_files_bytes", 2},
		{"count", `import os
n = 0
try:
    for i in range(10):
        open(f'/output/f{i}', 'w').write('x'); n += 1
except OSError:
    print('refused after', n)
result = {'done': True}`, "output_files", 4},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := runJob(t, c, &jobs.Job{Code: tt.code}, jobs.Handlers{})
			if res.Status != jobs.StatusOK || string(res.Result) != `{"done":true}` || !strings.Contains(res.Stdout, "refused") {
				t.Fatalf("%s %q %s %+v", res.Status, res.Stdout, res.Result, res.Error)
			}
			if res.FilesLimit != tt.limit || len(res.Files) != tt.files {
				t.Fatalf("limit %q (want %q), files %+v", res.FilesLimit, tt.limit, res.Files)
			}
		})
	}
}

// A job that raises, times out or is cancelled keeps what it wrote,
// flagged partial.
func TestFilesOutputOfFailedJobs(t *testing.T) {
	url := startServer(t)
	nc := connect(t, url)
	startWorker(t, nc, testConfig("w1"))
	c := filesClient(t, connect(t, url), jobs.DefaultTenant)
	write := "f = open('/output/progress.txt', 'w'); f.write('step 1'); f.flush()\n"
	tests := []struct {
		name   string
		job    jobs.Job
		status jobs.Status
	}{
		{"raises", jobs.Job{Code: write + "raise ValueError('bad data')"}, jobs.StatusError},
		{"times out", jobs.Job{Code: write + "while True: pass", TimeoutMS: 500}, jobs.StatusTimeout},
		{"exits", jobs.Job{Code: write + "import sys; sys.exit(3)"}, jobs.StatusError},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			job := tt.job
			res := runJob(t, c, &job, jobs.Handlers{})
			if res.Status != tt.status || len(res.Files) != 1 {
				t.Fatalf("%s, files %+v, error %q", res.Status, res.Files, res.FilesError)
			}
			f := res.Files[0]
			if f.Path != "progress.txt" || !f.Partial || f.SHA256 != sha([]byte("step 1")) {
				t.Fatalf("file %+v", f)
			}
		})
	}
	t.Run("cancelled", func(t *testing.T) {
		out := newOutput()
		h := out.handlers()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		job := &jobs.Job{Code: write + "print('started', flush=True)\nwhile True: pass"}
		done := make(chan *jobs.Result, 1)
		go func() {
			res, err := c.Run(ctx, "", job, h)
			if err != nil {
				t.Error(err)
			}
			done <- res
		}()
		waitFirstOutput(t, out)
		if err := c.Cancel(ctx, job.ID, "test"); err != nil {
			t.Fatal(err)
		}
		res := <-done
		if res == nil || res.Status != jobs.StatusCancelled || len(res.Files) != 1 || !res.Files[0].Partial {
			t.Fatalf("%+v", res)
		}
	})
}

// An object whose info lies about its size (anyone who can write the
// bucket can forge it) is admitted by its info but cannot make the
// worker read more: the read is bounded by the size admitted, and the
// code gets EIO.
func TestFilesForgedInfoBounded(t *testing.T) {
	url := startServer(t)
	nc := connect(t, url)
	startWorker(t, nc, filesConfig("w1"))
	c := filesClient(t, connect(t, url), jobs.DefaultTenant)
	if _, err := c.PutFile(context.Background(), "liar.bin", bytes.NewReader(bytes.Repeat([]byte("z"), 1<<20))); err != nil {
		t.Fatal(err)
	}
	js, _ := jetstream.New(nc)
	testenv.ForgeObjectSize(t, js, jobs.Subjects{}.FilesBucket(jobs.DefaultTenant), "liar.bin", 10)
	res := runJob(t, c, &jobs.Job{Code: `import errno, os
print(os.stat('/data/liar.bin').st_size)
try:
    open('/data/liar.bin', 'rb').read(); print('read it')
except OSError as e:
    print(errno.errorcode[e.errno])`, Files: map[string]string{"data/liar.bin": "liar.bin"}}, jobs.Handlers{})
	if res.Status != jobs.StatusOK || res.Stdout != "10\nEIO\n" {
		t.Fatalf("%s %q %+v %s", res.Status, res.Stdout, res.Error, res.Reason)
	}
}

// Output paths the result lists are what DownloadOutputs writes, and a
// forged listing cannot make it write outside the directory or fetch
// another job's objects.
func TestFilesDownloadRefusesForgedListing(t *testing.T) {
	url := startServer(t)
	nc := connect(t, url)
	startWorker(t, nc, testConfig("w1"))
	c := filesClient(t, connect(t, url), jobs.DefaultTenant)
	res := runJob(t, c, &jobs.Job{Code: "open('/output/a.txt', 'w').write('a')"}, jobs.Handlers{})
	if len(res.Files) != 1 {
		t.Fatalf("%+v", res)
	}
	good := res.Files[0]
	for _, f := range []jobs.OutputFile{
		{Path: "../escape.txt", Object: good.Object, Size: good.Size, SHA256: good.SHA256},
		{Path: "a.txt", Object: "other/" + res.ID + "/a.txt", Size: good.Size, SHA256: good.SHA256},
		{Path: "b.txt", Object: good.Object, Size: good.Size, SHA256: good.SHA256},
		{Path: "a.txt", Object: good.Object, Size: good.Size, SHA256: strings.Repeat("0", 64)},
	} {
		forged := *res
		forged.Files = []jobs.OutputFile{f}
		dir := filepath.Join(t.TempDir(), "out")
		if _, err := c.DownloadOutputs(context.Background(), &forged, dir); err == nil {
			t.Errorf("forged listing %+v downloaded", f)
		}
		if _, err := os.Stat(filepath.Join(filepath.Dir(dir), "escape.txt")); err == nil {
			t.Errorf("wrote outside the directory")
		}
	}
}

// filesClient is a client of tenant whose files bucket exists, as
// eryx-admin tenant add leaves it: uploads come before the tenant's
// first job.
func filesClient(t *testing.T, nc *nats.Conn, tenant string) *jobs.Client {
	t.Helper()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := (jobs.Topology{}).EnsureFilesBucket(context.Background(), js, tenant); err != nil {
		t.Fatal(err)
	}
	return tenantClient(t, nc, tenant)
}

// A tenant's files bucket is made by the worker at the tenant's first
// job with files, with the worker's size: a tenant that fills its own
// bucket does not stop another's outputs.
func TestFilesBucketPerTenant(t *testing.T) {
	url := startServer(t)
	nc := connect(t, url)
	cfg := testConfig("w1")
	cfg.Topology.FilesMaxBytes = 1 << 20
	startWorker(t, nc, cfg)
	js, _ := jetstream.New(nc)
	ctx := context.Background()
	carol := tenantClient(t, connect(t, url), "carol")
	dave := tenantClient(t, connect(t, url), "dave")
	if _, err := js.ObjectStore(ctx, "ERYX_FILES_carol"); err == nil {
		t.Fatal("carol's bucket exists before her first job")
	}

	res := runJob(t, carol, &jobs.Job{Code: `open('/output/big.bin', 'wb').write(b'c' * (1536 << 10))
open('/output/small.txt', 'w').write('carol')`}, jobs.Handlers{})
	if res.Status != jobs.StatusOK || !strings.Contains(res.FilesError, "big.bin") || len(res.Files) != 1 {
		t.Fatalf("carol over her bucket: %s files=%+v error=%q", res.Status, res.Files, res.FilesError)
	}
	if f := res.Files[0]; f.Bucket != "ERYX_FILES_carol" || f.Object != res.ID+"/small.txt" {
		t.Fatalf("carol's output: %+v", f)
	}
	st, err := js.Stream(ctx, "OBJ_ERYX_FILES_carol")
	if err != nil || st.CachedInfo().Config.MaxBytes != 1<<20 {
		t.Fatalf("carol's bucket: %v", err)
	}
	carolsOutput := res.ID + "/small.txt"
	var buf bytes.Buffer
	if _, err := carol.GetFile(ctx, carolsOutput, &buf); err != nil || buf.String() != "carol" {
		t.Fatalf("carol reading her output: %q %v", buf.String(), err)
	}

	res = runJob(t, dave, &jobs.Job{Code: `open('/output/d.txt', 'w').write('dave')`}, jobs.Handlers{})
	if res.Status != jobs.StatusOK || res.FilesError != "" || len(res.Files) != 1 || res.Files[0].Bucket != "ERYX_FILES_dave" {
		t.Fatalf("dave next to carol's full bucket: %s %+v %q", res.Status, res.Files, res.FilesError)
	}
	// Dave's job naming carol's object looks in his own bucket.
	res = runJob(t, dave, &jobs.Job{Code: "pass", Files: map[string]string{"data/x.txt": carolsOutput}}, jobs.Handlers{})
	if res.Status != jobs.StatusRejected || res.Code != jobs.CodeFileNotFound ||
		!strings.Contains(res.Reason, "ERYX_FILES_dave") {
		t.Fatalf("dave naming carol's output: %s %s %s", res.Status, res.Code, res.Reason)
	}
}
