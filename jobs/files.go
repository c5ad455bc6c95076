package jobs

import (
	"path"
	"strings"
	"unicode/utf8"
)

// Job files (docs/files.md): a job names input files by guest path,
// "data/<path>" → an object of its tenant in the files bucket; what its
// code writes under /output is stored as "<tenant>/<job id>/<path>".

// DataDir is the first component of every input path of a job.
const DataDir = "data"

// Bounds of file paths and object names; the guest's own bounds under
// /output are the same (sandbox.MaxFilePathBytes, MaxFileNameBytes).
const (
	MaxFilePathBytes = 1024
	MaxFileNameBytes = 255
	// DefaultMaxFiles is how many input files a job may name, unless the
	// worker's policy says otherwise (ERYX_FILES_MAX_COUNT).
	DefaultMaxFiles = 32
)

// OutputFile is one file a job left under /output, as the result lists it.
type OutputFile struct {
	// Path is below /output ("summary.csv" for /output/summary.csv).
	Path   string `json:"path"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
	// Object is its name in the tenant's files bucket,
	// "<job id>/<path>".
	Object string `json:"object"`
	// Bucket is that files bucket, <PREFIX>_FILES_<tenant>.
	Bucket string `json:"bucket,omitempty"`
	// ContentType is guessed from the extension (empty when unknown).
	ContentType string `json:"content_type,omitempty"`
	// Partial: the job did not finish ok (error, timeout, cancel), so the
	// file may be incomplete.
	Partial bool `json:"partial,omitempty"`
}

// OutputObject is the object of a job's output file in its tenant's
// files bucket, "<job id>/<path>".
func OutputObject(id, p string) string { return id + "/" + p }

// ContentAddressedName is the tenant-relative name under which clients
// upload content once: "sha256-<hex>".
func ContentAddressedName(sha256Hex string) string { return "sha256-" + sha256Hex }

// ValidFilePath reports why p is not usable as a file path or object
// name: it must be a clean relative "/"-separated path ("a/b.csv", no
// "", ".", ".." or empty components, no leading "/"), valid UTF-8
// without control characters or backslashes, at most MaxFilePathBytes,
// each component at most MaxFileNameBytes. "" means valid.
func ValidFilePath(p string) string {
	switch {
	case p == "":
		return "empty path"
	case len(p) > MaxFilePathBytes:
		return "longer than 1024 bytes"
	case !utf8.ValidString(p):
		return "not valid UTF-8"
	case strings.HasPrefix(p, "/"):
		return "absolute"
	}
	for _, r := range p {
		if r < 0x20 || r == 0x7f || r == '\\' {
			return "contains a control character or backslash"
		}
	}
	if path.Clean(p) != p || p == "." || p == ".." || strings.HasPrefix(p, "../") {
		return "not a clean relative path (., .., // or a trailing /)"
	}
	for _, part := range strings.Split(p, "/") {
		if len(part) > MaxFileNameBytes {
			return "a component is longer than 255 bytes"
		}
	}
	return ""
}

// FileRef is a job's reference to an input object: a tenant-relative
// name, and optionally the SHA-256 its content must have
// ("name@sha256:<hex>", as for packages).
type FileRef struct {
	Name   string
	SHA256 string
}

// ParseFileRef parses "name" or "name@sha256:<64 hex digits>".
func ParseFileRef(s string) (FileRef, error) {
	name, sum, pinned := strings.Cut(s, pinSep)
	if why := ValidFilePath(name); why != "" {
		return FileRef{}, reject(CodeInvalidPath, "file object %q: %s", truncateForReason(name), why)
	}
	if !pinned {
		return FileRef{Name: name}, nil
	}
	sum = strings.ToLower(sum)
	if len(sum) != 64 || strings.Trim(sum, "0123456789abcdef") != "" {
		return FileRef{}, reject(CodeInvalidPath, "file object %q: the pin must be sha256: and 64 hex digits", truncateForReason(name))
	}
	return FileRef{Name: name, SHA256: sum}, nil
}

// checkFiles validates the shape of a job's files: at most max entries,
// each key "data/<valid path>", each value a valid reference. Sizes and
// existence are the worker's to check, against the bucket.
func checkFiles(files map[string]string, max int) error {
	if max <= 0 {
		max = DefaultMaxFiles
	}
	if len(files) > max {
		return reject(CodeTooLarge, "%d input files, at most %d (limit files_count)", len(files), max)
	}
	for p, ref := range files {
		rel, ok := strings.CutPrefix(p, DataDir+"/")
		if !ok {
			return reject(CodeInvalidPath, "input path %q must start with %s/", truncateForReason(p), DataDir)
		}
		if why := ValidFilePath(rel); why != "" {
			return reject(CodeInvalidPath, "input path %q: %s", truncateForReason(p), why)
		}
		if _, err := ParseFileRef(ref); err != nil {
			return err
		}
	}
	// A file must not be another's directory ("data/a" and "data/a/b").
	for p := range files {
		for dir := path.Dir(p); dir != DataDir && dir != "."; dir = path.Dir(dir) {
			if _, ok := files[dir]; ok {
				return reject(CodeInvalidPath, "input path %q is also a directory of %q", truncateForReason(dir), truncateForReason(p))
			}
		}
	}
	return nil
}
