// Package kvstate keeps eryx sessions in JetStream: each session's
// snapshot (opaque bytes from the runtime) and metadata live in the KV
// bucket ERYX_SESSIONS under the session id, and snapshots too big for a
// KV value go to the object store ERYX_SESSION_BLOBS, referenced from the
// KV entry.
//
// Commits are compare-and-set on the KV revision: a commit names the
// revision it started from, so of two jobs of one session that ran
// concurrently on the same state, exactly one commits and the other gets
// ErrConflict. Each entry expires TTL after its last commit (per-message
// TTL, nats-server 2.11+).
//
// Layout of an entry: the value is the snapshot itself when it fits
// (MaxValueSize), else empty; the header Eryx-Session holds the metadata
// as JSON (see Meta), including the blob's object name when there is one.
// The entry is written with a plain JetStream publish on the KV subject
// ($KV.<bucket>.<id>) because the KV API cannot combine a revision check
// with a per-key TTL; KV tools still see ordinary entries.
//
// Integrity: with Config.MACKey set, every commit stores an HMAC-SHA256 of
// the session id and the snapshot in the metadata (Meta.MAC), and every
// load checks it before returning the snapshot: an entry or blob written
// or edited by anyone without the key fails with ErrTampered. The id is
// part of the tag, so a snapshot moved to another session's key fails too.
package kvstate

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"

	"github.com/eryx-dev/eryx/internal/objread"
)

// Defaults of Config.
const (
	DefaultBucket          = "ERYX_SESSIONS"
	DefaultBlobBucket      = "ERYX_SESSION_BLOBS"
	DefaultMaxValueSize    = 1 << 20
	DefaultMaxSnapshotSize = 64 << 20
	DefaultTTL             = 24 * time.Hour
	DefaultMaxTTL          = 30 * 24 * time.Hour
	// markerTTL is how long the markers of expired and deleted sessions
	// stay; a commit that creates a session steps over them.
	markerTTL = time.Hour
	// DefaultSweepGrace is how long Sweep leaves an unreferenced blob
	// alone: a commit uploads its blob before it writes the entry naming it.
	DefaultSweepGrace = 10 * time.Minute
	// headerRoom is kept free for headers under the server's max payload.
	headerRoom = 4 << 10
	// loadAttempts bounds Load's retries when a concurrent commit replaces
	// the blob between reading the entry and reading the blob.
	loadAttempts = 4
)

// HeaderMeta is the header of a KV entry holding the session's metadata.
const HeaderMeta = "Eryx-Session"

// Errors callers branch on.
var (
	// ErrNotFound: no such session (never created, deleted or expired).
	ErrNotFound = errors.New("session not found")
	// ErrConflict: the session moved past the expected revision (another
	// job committed first, or it was deleted or created meanwhile).
	ErrConflict = errors.New("session revision conflict")
	// ErrTooLarge: the snapshot is above Config.MaxSnapshotSize (Commit),
	// or an entry or its blob claims or holds more (Load).
	ErrTooLarge = errors.New("session snapshot too large")
	// ErrInvalidID: ids are KV keys: letters, digits, '_', '-', '=' and
	// inner dots, at most 255 bytes.
	ErrInvalidID = errors.New("invalid session id")
	// ErrCorrupt: an entry or blob that this package cannot read.
	ErrCorrupt = errors.New("session entry corrupt")
	// ErrTampered: the snapshot's integrity tag is missing or wrong (it
	// was not committed with this store's MACKey, or edited since).
	ErrTampered = errors.New("session snapshot fails its integrity check")
)

var idRE = regexp.MustCompile(`^[A-Za-z0-9_=\-]+(\.[A-Za-z0-9_=\-]+)*$`)

// ValidID reports whether id can name a session.
func ValidID(id string) bool { return len(id) <= 255 && idRE.MatchString(id) }

// Config tunes a Store. Zero fields take the defaults.
type Config struct {
	// Bucket and BlobBucket name the KV bucket and the object store.
	Bucket, BlobBucket string
	// MaxValueSize is the largest KV value; bigger snapshots go to the
	// object store. It is also capped by the server's max payload.
	MaxValueSize int
	// MaxSnapshotSize caps a snapshot (ErrTooLarge above it).
	MaxSnapshotSize int64
	// TTL is how long a session lives after its last commit, unless the
	// commit says otherwise; MaxTTL caps what a commit may ask for.
	TTL, MaxTTL time.Duration
	// SweepGrace is the age under which Sweep keeps unreferenced blobs.
	SweepGrace time.Duration
	// Replicas and Storage are those of both buckets when Open creates
	// them (defaults: 1, file).
	Replicas int
	Storage  jetstream.StorageType
	// MACKey, if set, makes commits tag snapshots and loads refuse any
	// whose tag does not verify (ErrTampered). At least MinMACKeyBytes.
	MACKey []byte
}

// MinMACKeyBytes is the shortest MACKey Open accepts.
const MinMACKeyBytes = 32

// macContext separates this tag from any other use of the key.
const macContext = "eryx-session-snapshot-v1"

// mac is the integrity tag of id's snapshot data.
func mac(key []byte, id string, data []byte) string {
	h := hmac.New(sha256.New, key)
	h.Write([]byte(macContext))
	h.Write([]byte{0})
	h.Write([]byte(id))
	h.Write([]byte{0})
	h.Write(data)
	return hex.EncodeToString(h.Sum(nil))
}

// verify checks data against the entry's tag, when the store has a key.
func (s *Store) verify(id string, meta Meta, data []byte) error {
	if len(s.cfg.MACKey) == 0 {
		return nil
	}
	if meta.MAC == "" {
		return fmt.Errorf("%w: %s: the entry has no integrity tag (not written by a worker)", ErrTampered, id)
	}
	want := mac(s.cfg.MACKey, id, data)
	if !hmac.Equal([]byte(want), []byte(meta.MAC)) {
		return fmt.Errorf("%w: %s: the integrity tag does not match the snapshot", ErrTampered, id)
	}
	return nil
}

func (c Config) withDefaults() Config {
	if c.Bucket == "" {
		c.Bucket = DefaultBucket
	}
	if c.BlobBucket == "" {
		c.BlobBucket = DefaultBlobBucket
	}
	if c.MaxValueSize <= 0 {
		c.MaxValueSize = DefaultMaxValueSize
	}
	if c.MaxSnapshotSize <= 0 {
		c.MaxSnapshotSize = DefaultMaxSnapshotSize
	}
	if c.MaxTTL <= 0 {
		c.MaxTTL = DefaultMaxTTL
	}
	if c.TTL <= 0 {
		c.TTL = DefaultTTL
	}
	c.TTL = min(c.TTL, c.MaxTTL)
	if c.SweepGrace <= 0 {
		c.SweepGrace = DefaultSweepGrace
	}
	if c.Replicas <= 0 {
		c.Replicas = 1
	}
	return c
}

// Meta is a session's metadata, kept beside its snapshot.
type Meta struct {
	// Worker is the id of the worker that made the last commit.
	Worker string `json:"worker,omitempty"`
	// Created is the time of the first commit, LastUsed of the last one.
	Created  time.Time `json:"created"`
	LastUsed time.Time `json:"last_used"`
	// TTL is how long the session lives after LastUsed.
	TTL time.Duration `json:"ttl"`
	// Size is the snapshot's length in bytes.
	Size int64 `json:"size"`
	// Commits counts the commits since creation.
	Commits uint64 `json:"commits"`
	// Blob is the object holding the snapshot, "" when it is inline.
	Blob string `json:"blob,omitempty"`
	// MAC is the snapshot's integrity tag (hex HMAC-SHA256, see
	// Config.MACKey); "" when the committing store had no key.
	MAC string `json:"mac,omitempty"`
}

// ExpiresAt is when the session expires unless committed again.
func (m Meta) ExpiresAt() time.Time { return m.LastUsed.Add(m.TTL) }

// Session is a session as loaded: its snapshot, the revision to commit
// against, and its metadata.
type Session struct {
	ID       string
	Revision uint64
	// Data is the snapshot; nil from Info, and from LoadSince when the
	// revision had not moved.
	Data []byte
	Meta
}

// CommitOptions describe a commit.
type CommitOptions struct {
	// Worker identifies the committing worker (Meta.Worker).
	Worker string
	// TTL overrides Config.TTL for this session (capped by MaxTTL).
	TTL time.Duration
}

// Store is the session store. It is safe for concurrent use.
type Store struct {
	js        jetstream.JetStream
	kv        jetstream.KeyValue
	stream    jetstream.Stream
	obs       jetstream.ObjectStore
	cfg       Config
	subject   string // "$KV.<bucket>."
	inlineMax int

	// heads remembers what this process last read or wrote of each
	// session, so that a commit following a load skips re-reading the
	// entry. Bounded: it is an optimisation, a miss costs one read.
	mu    sync.Mutex
	heads map[string]head
}

type head struct {
	rev  uint64
	meta Meta
}

const maxHeads = 4096

// Open binds to (creating if needed) the session buckets. An existing KV
// bucket without per-message TTL gets it enabled; nothing else of an
// existing bucket's configuration is changed.
func Open(ctx context.Context, js jetstream.JetStream, cfg Config) (*Store, error) {
	cfg = cfg.withDefaults()
	if n := len(cfg.MACKey); n > 0 && n < MinMACKeyBytes {
		return nil, fmt.Errorf("kvstate: the snapshot key has %d bytes, at least %d are needed", n, MinMACKeyBytes)
	}
	kv, err := js.KeyValue(ctx, cfg.Bucket)
	switch {
	case errors.Is(err, jetstream.ErrBucketNotFound):
		kv, err = js.CreateKeyValue(ctx, jetstream.KeyValueConfig{
			Bucket:         cfg.Bucket,
			Description:    "eryx sessions: snapshot and metadata per session id",
			MaxValueSize:   int32(cfg.MaxValueSize),
			History:        1,
			Storage:        cfg.Storage,
			Replicas:       cfg.Replicas,
			LimitMarkerTTL: markerTTL,
		})
		if errors.Is(err, jetstream.ErrBucketExists) { // another worker won the race
			kv, err = js.KeyValue(ctx, cfg.Bucket)
		}
	case err == nil:
		err = enableMsgTTL(ctx, js, kv)
	}
	if err != nil {
		return nil, fmt.Errorf("kvstate: bucket %s: %w", cfg.Bucket, err)
	}
	stream, err := js.Stream(ctx, "KV_"+cfg.Bucket)
	if err != nil {
		return nil, fmt.Errorf("kvstate: bucket %s: %w", cfg.Bucket, err)
	}
	obs, err := js.ObjectStore(ctx, cfg.BlobBucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		obs, err = js.CreateObjectStore(ctx, jetstream.ObjectStoreConfig{
			Bucket:      cfg.BlobBucket,
			Description: "eryx session snapshots too big for " + cfg.Bucket,
			// A blob outlives the entry naming it by at most MaxTTL; Sweep
			// removes orphans sooner.
			TTL:      cfg.MaxTTL + time.Hour,
			Storage:  cfg.Storage,
			Replicas: cfg.Replicas,
		})
		if errors.Is(err, jetstream.ErrBucketExists) {
			obs, err = js.ObjectStore(ctx, cfg.BlobBucket)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("kvstate: object store %s: %w", cfg.BlobBucket, err)
	}

	inlineMax := cfg.MaxValueSize
	if st, err := kv.Status(ctx); err == nil {
		if v := int(st.Config().MaxValueSize); v > 0 {
			inlineMax = min(inlineMax, v)
		}
	}
	if mp := int(js.Conn().MaxPayload()); mp > 0 {
		inlineMax = min(inlineMax, mp-headerRoom)
	}
	return &Store{
		js: js, kv: kv, stream: stream, obs: obs, cfg: cfg,
		subject:   "$KV." + cfg.Bucket + ".",
		inlineMax: inlineMax,
		heads:     map[string]head{},
	}, nil
}

func enableMsgTTL(ctx context.Context, js jetstream.JetStream, kv jetstream.KeyValue) error {
	st, err := kv.Status(ctx)
	if err != nil {
		return err
	}
	if st.LimitMarkerTTL() > 0 {
		return nil
	}
	c := st.Config()
	c.LimitMarkerTTL = markerTTL
	_, err = js.UpdateKeyValue(ctx, c)
	return err
}

// Config returns the effective configuration.
func (s *Store) Config() Config { return s.cfg }

// Load returns the session with its snapshot.
func (s *Store) Load(ctx context.Context, id string) (*Session, error) {
	return s.load(ctx, id, 0)
}

// LoadSince is Load for a caller that holds revision have in memory: when
// the session is still at have it returns it without Data (and without
// downloading a blob); otherwise it returns the newer snapshot.
func (s *Store) LoadSince(ctx context.Context, id string, have uint64) (*Session, error) {
	return s.load(ctx, id, have)
}

func (s *Store) load(ctx context.Context, id string, have uint64) (*Session, error) {
	if !ValidID(id) {
		return nil, fmt.Errorf("%w: %q", ErrInvalidID, id)
	}
	var lastErr error
	for range loadAttempts {
		sess, inline, err := s.read(ctx, id)
		if err != nil {
			return nil, err
		}
		if have != 0 && sess.Revision == have {
			return sess, nil
		}
		if sess.Blob == "" {
			if err := s.verify(id, sess.Meta, inline); err != nil {
				return nil, err
			}
			sess.Data = inline
			return sess, nil
		}
		// Sizes are checked before anything is fetched: the entry's, then
		// the object's info, then the bytes as they come (objread), so a
		// forged entry or object cannot make this process buffer more
		// than MaxSnapshotSize.
		if sess.Size < 0 || sess.Size > s.cfg.MaxSnapshotSize {
			return nil, fmt.Errorf("%w: %s: entry says %d bytes, the limit is %d", ErrTooLarge, id, sess.Size, s.cfg.MaxSnapshotSize)
		}
		data, err := objread.Read(ctx, s.obs, sess.Blob, sess.Size)
		if errors.Is(err, objread.ErrTooLarge) {
			return nil, fmt.Errorf("%w: %s: blob larger than its entry says: %w", ErrTooLarge, id, err)
		}
		if errors.Is(err, jetstream.ErrObjectNotFound) {
			// Replaced by a commit between our two reads (or lost):
			// re-read the entry.
			lastErr = fmt.Errorf("%w: %s: blob %s missing", ErrCorrupt, id, sess.Blob)
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("kvstate: load %s: blob: %w", id, err)
		}
		if int64(len(data)) != sess.Size {
			return nil, fmt.Errorf("%w: %s: blob has %d bytes, entry says %d", ErrCorrupt, id, len(data), sess.Size)
		}
		if err := s.verify(id, sess.Meta, data); err != nil {
			return nil, err
		}
		sess.Data = data
		return sess, nil
	}
	return nil, lastErr
}

// Info returns the session's revision and metadata without its snapshot.
func (s *Store) Info(ctx context.Context, id string) (*Session, error) {
	if !ValidID(id) {
		return nil, fmt.Errorf("%w: %q", ErrInvalidID, id)
	}
	sess, _, err := s.read(ctx, id)
	return sess, err
}

// read fetches the KV entry: the session (without Data) and the inline
// snapshot.
func (s *Store) read(ctx context.Context, id string) (*Session, []byte, error) {
	msg, err := s.stream.GetLastMsgForSubject(ctx, s.subject+id)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, nil, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("kvstate: read %s: %w", id, err)
	}
	if isMarker(msg.Header) {
		return nil, nil, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	var meta Meta
	if err := json.Unmarshal([]byte(msg.Header.Get(HeaderMeta)), &meta); err != nil {
		return nil, nil, fmt.Errorf("%w: %s: metadata: %w", ErrCorrupt, id, err)
	}
	if meta.Blob == "" && int64(len(msg.Data)) != meta.Size {
		return nil, nil, fmt.Errorf("%w: %s: value has %d bytes, entry says %d", ErrCorrupt, id, len(msg.Data), meta.Size)
	}
	s.remember(id, head{rev: msg.Sequence, meta: meta})
	return &Session{ID: id, Revision: msg.Sequence, Meta: meta}, msg.Data, nil
}

// isMarker tells delete, purge and expiry markers from entries.
func isMarker(h nats.Header) bool {
	return h.Get("KV-Operation") != "" || h.Get(jetstream.MarkerReasonHeader) != ""
}

// Commit stores data as the session's new snapshot if the session is
// still at revision expected (0: the session must not exist), and returns
// the new revision. It fails with ErrConflict when the session moved,
// ErrTooLarge above MaxSnapshotSize.
func (s *Store) Commit(ctx context.Context, id string, data []byte, expected uint64, opts CommitOptions) (uint64, error) {
	if !ValidID(id) {
		return 0, fmt.Errorf("%w: %q", ErrInvalidID, id)
	}
	if int64(len(data)) > s.cfg.MaxSnapshotSize {
		return 0, fmt.Errorf("%w: %s: %d bytes, the limit is %d", ErrTooLarge, id, len(data), s.cfg.MaxSnapshotSize)
	}
	ttl := opts.TTL
	if ttl <= 0 {
		ttl = s.cfg.TTL
	}
	ttl = max(min(ttl, s.cfg.MaxTTL), time.Second) // the server's TTL granularity

	// What the entry holds now: to fail early on a conflict (before
	// uploading a blob), to carry Created and Commits forward, and to
	// find the blob this commit replaces.
	prev, marker, err := s.current(ctx, id, expected)
	if err != nil {
		return 0, err
	}
	now := time.Now().UTC()
	meta := Meta{Worker: opts.Worker, Created: now, LastUsed: now, TTL: ttl, Size: int64(len(data)), Commits: 1}
	if prev != nil {
		meta.Created, meta.Commits = prev.meta.Created, prev.meta.Commits+1
	}
	if len(s.cfg.MACKey) > 0 {
		meta.MAC = mac(s.cfg.MACKey, id, data)
	}
	value := data
	if len(data)+len(HeaderMeta)+512 > s.inlineMax {
		meta.Blob = blobPrefix(id) + nuid.Next()
		if _, err := s.obs.PutBytes(ctx, meta.Blob, data); err != nil {
			return 0, fmt.Errorf("kvstate: commit %s: blob: %w", id, err)
		}
		value = nil
	}
	hdr, err := json.Marshal(meta)
	if err != nil {
		return 0, err
	}

	// Expect the entry we examined; when creating, step over a marker
	// left by a delete or an expiry.
	want := expected
	if expected == 0 {
		want = marker
	}
	msg := &nats.Msg{Subject: s.subject + id, Header: nats.Header{HeaderMeta: {string(hdr)}}, Data: value}
	ack, err := s.js.PublishMsg(ctx, msg, jetstream.WithExpectLastSequencePerSubject(want), jetstream.WithMsgTTL(ttl))
	if err != nil {
		if meta.Blob != "" {
			s.dropBlob(ctx, meta.Blob)
		}
		if isWrongLastSeq(err) {
			s.forget(id)
			return 0, fmt.Errorf("%w: %s: not at revision %d any more", ErrConflict, id, expected)
		}
		return 0, fmt.Errorf("kvstate: commit %s: %w", id, err)
	}
	if prev != nil && prev.meta.Blob != "" {
		s.dropBlob(ctx, prev.meta.Blob)
	}
	s.remember(id, head{rev: ack.Sequence, meta: meta})
	return ack.Sequence, nil
}

// current returns the entry at revision expected (nil when expected is 0)
// and, when creating, the revision of the marker in the way (0 if none).
// A mismatch is ErrConflict.
func (s *Store) current(ctx context.Context, id string, expected uint64) (*head, uint64, error) {
	if expected != 0 {
		if h, ok := s.cached(id); ok && h.rev == expected {
			return &h, 0, nil
		}
	}
	msg, err := s.stream.GetLastMsgForSubject(ctx, s.subject+id)
	switch {
	case errors.Is(err, jetstream.ErrMsgNotFound):
		if expected != 0 {
			return nil, 0, fmt.Errorf("%w: %s: expected revision %d, the session does not exist", ErrConflict, id, expected)
		}
		return nil, 0, nil
	case err != nil:
		return nil, 0, fmt.Errorf("kvstate: commit %s: %w", id, err)
	case isMarker(msg.Header):
		if expected != 0 {
			return nil, 0, fmt.Errorf("%w: %s: expected revision %d, the session was deleted or expired", ErrConflict, id, expected)
		}
		return nil, msg.Sequence, nil
	case msg.Sequence != expected:
		if expected == 0 {
			return nil, 0, fmt.Errorf("%w: %s: already exists at revision %d", ErrConflict, id, msg.Sequence)
		}
		return nil, 0, fmt.Errorf("%w: %s: at revision %d, expected %d", ErrConflict, id, msg.Sequence, expected)
	}
	var meta Meta
	if err := json.Unmarshal([]byte(msg.Header.Get(HeaderMeta)), &meta); err != nil {
		return nil, 0, fmt.Errorf("%w: %s: metadata: %w", ErrCorrupt, id, err)
	}
	return &head{rev: msg.Sequence, meta: meta}, 0, nil
}

func isWrongLastSeq(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)
}

// dropBlob deletes a blob nobody references any more, best effort: a
// failure leaves an orphan for Sweep or the bucket's TTL.
func (s *Store) dropBlob(ctx context.Context, name string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	_ = s.obs.Delete(ctx, name)
}

// Delete removes the session and its blob. Deleting a missing session is
// ErrNotFound. A job of the session still running fails to commit
// (ErrConflict).
func (s *Store) Delete(ctx context.Context, id string) error {
	sess, err := s.Info(ctx, id)
	if err != nil {
		return err
	}
	if err := s.kv.Purge(ctx, id, jetstream.PurgeTTL(markerTTL)); err != nil {
		return fmt.Errorf("kvstate: delete %s: %w", id, err)
	}
	s.forget(id)
	if sess.Blob != "" {
		s.dropBlob(ctx, sess.Blob)
	}
	return nil
}

// List returns every live session's revision and metadata, by id.
// Entries this package did not write are left out.
func (s *Store) List(ctx context.Context) ([]*Session, error) {
	lister, err := s.kv.ListKeys(ctx)
	if err != nil {
		return nil, fmt.Errorf("kvstate: list: %w", err)
	}
	var ids []string
	for id := range lister.Keys() {
		ids = append(ids, id)
	}
	var out []*Session
	seen := map[string]bool{}
	for _, id := range ids {
		if seen[id] {
			continue
		}
		seen[id] = true
		sess, err := s.Info(ctx, id)
		if errors.Is(err, ErrNotFound) || errors.Is(err, ErrInvalidID) || errors.Is(err, ErrCorrupt) {
			continue // expired or deleted since the listing; or not a session entry
		}
		if err != nil {
			return nil, err
		}
		out = append(out, sess)
	}
	slices.SortFunc(out, func(a, b *Session) int { return strings.Compare(a.ID, b.ID) })
	return out, nil
}

// Sweep deletes blobs that no live session references and that are older
// than SweepGrace (a commit uploads its blob just before writing the
// entry): those of expired sessions and of interrupted commits. Run it
// now and then from one place; it returns how many blobs it removed.
func (s *Store) Sweep(ctx context.Context) (int, error) {
	objs, err := s.obs.List(ctx)
	if errors.Is(err, jetstream.ErrNoObjectsFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("kvstate: sweep: %w", err)
	}
	removed := 0
	for _, o := range objs {
		if time.Since(o.ModTime) < s.cfg.SweepGrace {
			continue
		}
		sess, err := s.Info(ctx, blobID(o.Name))
		switch {
		case err == nil && sess.Blob == o.Name:
			continue // in use
		case errors.Is(err, ErrCorrupt):
			continue // cannot tell which blob the entry names: keep
		case err != nil && !errors.Is(err, ErrNotFound) && !errors.Is(err, ErrInvalidID):
			return removed, err
		}
		if err := s.obs.Delete(ctx, o.Name); err != nil && !errors.Is(err, jetstream.ErrObjectNotFound) {
			return removed, fmt.Errorf("kvstate: sweep %s: %w", o.Name, err)
		}
		removed++
	}
	return removed, nil
}

// blobPrefix is the start of the names of id's blobs: the id with its
// dots as slashes, so that a tenant's session "acme.s1" has its blobs
// under "acme/s1/" (ids hold no slashes, so blobID undoes it).
func blobPrefix(id string) string { return strings.ReplaceAll(id, ".", "/") + "/" }

// blobID is the session id a blob name belongs to.
func blobID(name string) string {
	if i := strings.LastIndexByte(name, '/'); i >= 0 {
		name = name[:i]
	}
	return strings.ReplaceAll(name, "/", ".")
}

func (s *Store) remember(id string, h head) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.heads) >= maxHeads {
		for k := range s.heads { // drop an arbitrary one
			delete(s.heads, k)
			break
		}
	}
	s.heads[id] = h
}

func (s *Store) cached(id string) (head, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	h, ok := s.heads[id]
	return h, ok
}

func (s *Store) forget(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.heads, id)
}
