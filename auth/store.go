package auth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/eryx-dev/eryx/jobs"
)

// Errors of the store and of authentication; the callout turns them into
// the refusal reason.
var (
	ErrUnknownKey    = errors.New("auth: unknown API key")
	ErrMalformedKey  = errors.New("auth: malformed API key")
	ErrUnknownTenant = errors.New("auth: unknown tenant")
	ErrTenantExists  = errors.New("auth: tenant exists")
	ErrNoStore       = errors.New("auth: no ERYX_AUTH bucket (is eryx-auth deployed?)")
)

// KV layout of the ERYX_AUTH bucket: tenants.<tenant> holds a Tenant,
// keys.<id> a Key. Workers may read tenants.> (quotas), never keys.>.
const (
	tenantsKey = "tenants"
	keysKey    = "keys"
)

func authBucket(s jobs.Subjects) string {
	up := strings.ToUpper(strings.ReplaceAll(s.Prefix, ".", "_"))
	if s.Prefix == "" {
		up = "ERYX"
	}
	return up + "_AUTH"
}

// Bucket is the name of the KV bucket of tenants and keys under prefix
// (ERYX_AUTH for the default prefix).
func Bucket(prefix string) (string, error) {
	s, err := validPrefix(prefix)
	if err != nil {
		return "", err
	}
	return authBucket(s), nil
}

// Quotas are a tenant's limits. Zero means the default, never unlimited.
// The callout does not enforce them (it sees connections, not jobs); the
// worker reads them with TenantStore.Quotas and enforces them.
type Quotas struct {
	// MaxRunning is how many of the tenant's jobs may run at once.
	MaxRunning int `json:"max_running,omitempty"`
	// MaxQueued is how many of the tenant's jobs may wait in the queue.
	// Enforced by the jobs stream's per-subject limit, which is one value
	// for every tenant (the workers' ERYX_MAX_QUEUED_PER_TENANT): a
	// tenant's own value is not enforced apart from it yet.
	MaxQueued int `json:"max_queued,omitempty"`
	// SubmissionsPerSecond is the sustained rate of new jobs (burst: one
	// second's worth).
	SubmissionsPerSecond int `json:"submissions_per_second,omitempty"`
	// MemoryPerJob is the most memory one job may ask for, in bytes.
	MemoryPerJob int64 `json:"memory_per_job,omitempty"`
	// ExecSecondsPerHour bounds the execution time of all the tenant's
	// jobs over any hour.
	ExecSecondsPerHour int `json:"exec_seconds_per_hour,omitempty"`
}

// DefaultQuotas are the limits of a tenant that sets none.
var DefaultQuotas = Quotas{
	MaxRunning:           8,
	MaxQueued:            jobs.DefaultMaxQueuedPerTenant,
	SubmissionsPerSecond: 20,
	MemoryPerJob:         128 << 20,
	ExecSecondsPerHour:   3600,
}

// NoQuotas are the limits of a deployment without eryx-auth (no tenant
// records): none beyond the worker's own, so that a single-tenant install
// is not throttled by defaults meant for strangers sharing a fleet.
func NoQuotas() Quotas {
	return Quotas{MaxRunning: math.MaxInt32, MaxQueued: math.MaxInt32, SubmissionsPerSecond: math.MaxInt32,
		MemoryPerJob: math.MaxInt64, ExecSecondsPerHour: math.MaxInt32}
}

// WithDefaults fills every zero limit with its default.
func (q Quotas) WithDefaults() Quotas {
	d := DefaultQuotas
	if q.MaxRunning > 0 {
		d.MaxRunning = q.MaxRunning
	}
	if q.MaxQueued > 0 {
		d.MaxQueued = q.MaxQueued
	}
	if q.SubmissionsPerSecond > 0 {
		d.SubmissionsPerSecond = q.SubmissionsPerSecond
	}
	if q.MemoryPerJob > 0 {
		d.MemoryPerJob = q.MemoryPerJob
	}
	if q.ExecSecondsPerHour > 0 {
		d.ExecSecondsPerHour = q.ExecSecondsPerHour
	}
	return d
}

func (q Quotas) validate() error {
	if q.MaxRunning < 0 || q.MaxQueued < 0 || q.SubmissionsPerSecond < 0 || q.MemoryPerJob < 0 || q.ExecSecondsPerHour < 0 {
		return fmt.Errorf("%w quotas: negative limit", ErrInvalid)
	}
	return nil
}

// Tenant is one tenant's record.
type Tenant struct {
	Name string `json:"name"`
	// UID is new for every tenant created, so that keys of a removed
	// tenant do not come back to life when the name is reused.
	UID     string    `json:"uid"`
	Created time.Time `json:"created"`
	// Queues the tenant's submitters may publish to; empty: all.
	Queues []string `json:"queues,omitempty"`
	Quotas Quotas   `json:"quotas"`
}

// Key is one API key's record. The key itself is not stored: only its
// SHA-256.
type Key struct {
	// ID is the key's public part (it is in the key), to revoke it by.
	ID   string `json:"id"`
	Hash string `json:"sha256"`
	Role Role   `json:"role"`
	// Tenant and TenantUID: a submitter's tenant.
	Tenant    string `json:"tenant,omitempty"`
	TenantUID string `json:"tenant_uid,omitempty"`
	// Queues narrows a submitter to these queues (from the tenant's).
	Queues []string `json:"queues,omitempty"`
	// Queue a worker serves.
	Queue string `json:"queue,omitempty"`
	// Callbacks a callback service may serve.
	Callbacks   []string  `json:"callbacks,omitempty"`
	Description string    `json:"description,omitempty"`
	Created     time.Time `json:"created"`
}

// keyPrefix starts every API key: eryx_<id>_<secret>.
const keyPrefix = "eryx_"

// maxKeyLen bounds what is parsed: anything longer is not a key.
const maxKeyLen = 128

// newKey makes a key: a 48-bit public id and a 256-bit secret, both
// random, URL-safe (it may be used inside a NATS URL).
func newKey() (id, key string, err error) {
	var idb [6]byte
	var sec [32]byte
	if _, err := rand.Read(idb[:]); err != nil {
		return "", "", err
	}
	if _, err := rand.Read(sec[:]); err != nil {
		return "", "", err
	}
	id = hex.EncodeToString(idb[:])
	return id, keyPrefix + id + "_" + base64.RawURLEncoding.EncodeToString(sec[:]), nil
}

// parseKey returns a key's id, or ErrMalformedKey.
func parseKey(key string) (string, error) {
	if len(key) > maxKeyLen {
		return "", fmt.Errorf("%w: longer than %d bytes", ErrMalformedKey, maxKeyLen)
	}
	rest, ok := strings.CutPrefix(key, keyPrefix)
	if !ok {
		return "", fmt.Errorf("%w: want %s<id>_<secret>", ErrMalformedKey, keyPrefix)
	}
	id, secret, ok := strings.Cut(rest, "_")
	if !ok || len(id) != 12 || secret == "" {
		return "", fmt.Errorf("%w: want %s<id>_<secret>", ErrMalformedKey, keyPrefix)
	}
	if _, err := hex.DecodeString(id); err != nil {
		return "", fmt.Errorf("%w: id is not hex", ErrMalformedKey)
	}
	return id, nil
}

// hashKey is the stored form of a key. A plain SHA-256 suffices: keys
// carry 256 random bits, so there is no dictionary to try and a slow hash
// would only slow down every connection (docs/RATIONALE.md).
func hashKey(key string) string {
	h := sha256.Sum256([]byte(key))
	return hex.EncodeToString(h[:])
}

// Store holds tenants and API keys in the ERYX_AUTH bucket. eryx-auth
// reads it on every connection, so a change (a revoked key, a removed
// tenant) applies to the next connection.
type Store struct {
	kv jetstream.KeyValue
}

// OpenStore opens the bucket, creating it if create is set (eryx-auth
// and eryx-admin do; nothing else should).
func OpenStore(ctx context.Context, js jetstream.JetStream, prefix string, create bool) (*Store, error) {
	name, err := Bucket(prefix)
	if err != nil {
		return nil, err
	}
	kv, err := js.KeyValue(ctx, name)
	if errors.Is(err, jetstream.ErrBucketNotFound) && create {
		kv, err = js.CreateKeyValue(ctx, jetstream.KeyValueConfig{
			Bucket:      name,
			Description: "eryx tenants and hashed API keys",
			History:     1,
		})
		if errors.Is(err, jetstream.ErrBucketExists) {
			kv, err = js.KeyValue(ctx, name)
		}
	}
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return nil, ErrNoStore
	}
	if err != nil {
		return nil, fmt.Errorf("auth: bucket %s: %w", name, err)
	}
	return &Store{kv: kv}, nil
}

func (s *Store) get(ctx context.Context, key string, v any) error {
	e, err := s.kv.Get(ctx, key)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(e.Value(), v); err != nil {
		return fmt.Errorf("auth: record %s: %w", key, err)
	}
	return nil
}

func newUID() (string, error) {
	var b [12]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	return hex.EncodeToString(b[:]), nil
}

// AddTenant creates a tenant, or fails with ErrTenantExists.
func (s *Store) AddTenant(ctx context.Context, t Tenant) (Tenant, error) {
	if err := validTenant(t.Name); err != nil {
		return Tenant{}, err
	}
	for _, q := range t.Queues {
		if err := validToken("queue", q); err != nil {
			return Tenant{}, err
		}
	}
	if err := t.Quotas.validate(); err != nil {
		return Tenant{}, err
	}
	uid, err := newUID()
	if err != nil {
		return Tenant{}, err
	}
	t.UID, t.Created = uid, time.Now().UTC()
	data, err := json.Marshal(t)
	if err != nil {
		return Tenant{}, err
	}
	if _, err := s.kv.Create(ctx, tenantsKey+"."+t.Name, data); err != nil {
		if errors.Is(err, jetstream.ErrKeyExists) {
			return Tenant{}, fmt.Errorf("%w: %s", ErrTenantExists, t.Name)
		}
		return Tenant{}, fmt.Errorf("auth: adding tenant %s: %w", t.Name, err)
	}
	return t, nil
}

// SetQuotas replaces a tenant's quotas.
func (s *Store) SetQuotas(ctx context.Context, name string, q Quotas) (Tenant, error) {
	if err := q.validate(); err != nil {
		return Tenant{}, err
	}
	e, err := s.kv.Get(ctx, tenantsKey+"."+name)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return Tenant{}, fmt.Errorf("%w: %s", ErrUnknownTenant, name)
	}
	if err != nil {
		return Tenant{}, err
	}
	var t Tenant
	if err := json.Unmarshal(e.Value(), &t); err != nil {
		return Tenant{}, err
	}
	t.Quotas = q
	data, err := json.Marshal(t)
	if err != nil {
		return Tenant{}, err
	}
	if _, err := s.kv.Update(ctx, e.Key(), data, e.Revision()); err != nil {
		return Tenant{}, fmt.Errorf("auth: updating tenant %s: %w", name, err)
	}
	return t, nil
}

// Tenant returns one tenant, or ErrUnknownTenant.
func (s *Store) Tenant(ctx context.Context, name string) (Tenant, error) {
	if err := validTenant(name); err != nil {
		return Tenant{}, err
	}
	var t Tenant
	err := s.get(ctx, tenantsKey+"."+name, &t)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return Tenant{}, fmt.Errorf("%w: %s", ErrUnknownTenant, name)
	}
	return t, err
}

func (s *Store) list(ctx context.Context, prefix string) ([]string, error) {
	kl, err := s.kv.ListKeysFiltered(ctx, prefix+".*")
	if err != nil {
		return nil, err
	}
	var keys []string
	for k := range kl.Keys() {
		keys = append(keys, k)
	}
	if errors.Is(kl.Stop(), jetstream.ErrNoKeysFound) {
		return nil, nil
	}
	slices.Sort(keys)
	return keys, nil
}

// Tenants lists every tenant, by name.
func (s *Store) Tenants(ctx context.Context) ([]Tenant, error) {
	keys, err := s.list(ctx, tenantsKey)
	if err != nil {
		return nil, err
	}
	out := make([]Tenant, 0, len(keys))
	for _, k := range keys {
		var t Tenant
		if err := s.get(ctx, k, &t); err == nil {
			out = append(out, t)
		}
	}
	return out, nil
}

// Keys lists every key's record (never the keys).
func (s *Store) Keys(ctx context.Context) ([]Key, error) {
	keys, err := s.list(ctx, keysKey)
	if err != nil {
		return nil, err
	}
	out := make([]Key, 0, len(keys))
	for _, k := range keys {
		var r Key
		if err := s.get(ctx, k, &r); err == nil {
			out = append(out, r)
		}
	}
	return out, nil
}

// RemoveTenant deletes a tenant and its keys. Its keys stop working even
// if deleting one of them fails, since a key is valid only with its
// tenant's record.
func (s *Store) RemoveTenant(ctx context.Context, name string) error {
	if _, err := s.Tenant(ctx, name); err != nil {
		return err
	}
	if err := s.kv.Delete(ctx, tenantsKey+"."+name); err != nil {
		return fmt.Errorf("auth: removing tenant %s: %w", name, err)
	}
	keys, err := s.Keys(ctx)
	if err != nil {
		return err
	}
	for _, k := range keys {
		if k.Tenant == name {
			if err := s.kv.Delete(ctx, keysKey+"."+k.ID); err != nil {
				return fmt.Errorf("auth: removing key %s of tenant %s: %w", k.ID, name, err)
			}
		}
	}
	return nil
}

// KeySpec says what a new key may do.
type KeySpec struct {
	Role        Role
	Tenant      string   // submitter
	Queues      []string // submitter: narrower than the tenant's queues
	Queue       string   // worker
	Callbacks   []string // callback
	Description string
}

// IssueKey creates a key and returns it: the only time it is visible.
func (s *Store) IssueKey(ctx context.Context, spec KeySpec) (string, Key, error) {
	if err := ValidRole(spec.Role); err != nil {
		return "", Key{}, err
	}
	k := Key{Role: spec.Role, Description: spec.Description, Created: time.Now().UTC()}
	switch spec.Role {
	case RoleSubmitter:
		t, err := s.Tenant(ctx, spec.Tenant)
		if err != nil {
			return "", Key{}, err
		}
		k.Tenant, k.TenantUID = t.Name, t.UID
		k.Queues = t.Queues
		if len(spec.Queues) > 0 {
			for _, q := range spec.Queues {
				if len(t.Queues) > 0 && !slices.Contains(t.Queues, q) {
					return "", Key{}, fmt.Errorf("%w: queue %q is not one of tenant %s's %v", ErrInvalid, q, t.Name, t.Queues)
				}
			}
			k.Queues = spec.Queues
		}
	case RoleWorker:
		k.Queue = spec.Queue
		if k.Queue == "" {
			k.Queue = jobs.DefaultQueue
		}
	case RoleCallback:
		k.Callbacks = spec.Callbacks
	case RoleAdmin:
	}
	// Fail now rather than on every connection.
	if _, err := PermissionsFor(jobs.DefaultPrefix, k); err != nil {
		return "", Key{}, err
	}
	id, key, err := newKey()
	if err != nil {
		return "", Key{}, err
	}
	k.ID, k.Hash = id, hashKey(key)
	data, err := json.Marshal(k)
	if err != nil {
		return "", Key{}, err
	}
	if _, err := s.kv.Create(ctx, keysKey+"."+id, data); err != nil {
		return "", Key{}, fmt.Errorf("auth: storing key: %w", err)
	}
	return key, k, nil
}

// RevokeKey deletes a key by id (or by the key itself). Connections made
// with it stay up; the next connection is refused.
func (s *Store) RevokeKey(ctx context.Context, idOrKey string) error {
	id := idOrKey
	if strings.HasPrefix(idOrKey, keyPrefix) {
		var err error
		if id, err = parseKey(idOrKey); err != nil {
			return err
		}
	}
	if _, err := hex.DecodeString(id); err != nil || len(id) != 12 {
		return fmt.Errorf("%w: key id %q", ErrMalformedKey, id)
	}
	if _, err := s.kv.Get(ctx, keysKey+"."+id); errors.Is(err, jetstream.ErrKeyNotFound) {
		return fmt.Errorf("%w: %s", ErrUnknownKey, id)
	}
	return s.kv.Delete(ctx, keysKey+"."+id)
}

// Authenticate maps an API key to its record and, for a submitter, its
// tenant. It fails with ErrMalformedKey, ErrUnknownKey (also for a key
// whose hash does not match), or ErrUnknownTenant (the tenant was
// removed, possibly re-created under the same name).
func (s *Store) Authenticate(ctx context.Context, key string) (Key, *Tenant, error) {
	id, err := parseKey(key)
	if err != nil {
		return Key{}, nil, err
	}
	var k Key
	if err := s.get(ctx, keysKey+"."+id, &k); err != nil {
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			return Key{}, nil, fmt.Errorf("%w: %s", ErrUnknownKey, id)
		}
		return Key{}, nil, err
	}
	if subtle.ConstantTimeCompare([]byte(k.Hash), []byte(hashKey(key))) != 1 {
		return Key{}, nil, fmt.Errorf("%w: %s", ErrUnknownKey, id)
	}
	if k.Role != RoleSubmitter {
		return k, nil, nil
	}
	t, err := s.Tenant(ctx, k.Tenant)
	if err != nil {
		return Key{}, nil, err
	}
	if t.UID != k.TenantUID {
		return Key{}, nil, fmt.Errorf("%w: %s was removed after key %s was issued", ErrUnknownTenant, k.Tenant, id)
	}
	return k, &t, nil
}

// TenantStore is the read-only view a worker has of the tenants: their
// quotas. Workers' permissions allow exactly these reads.
type TenantStore struct {
	kv jetstream.KeyValue
}

// OpenTenantStore opens the bucket for reading; ErrNoStore if there is
// none (a deployment without eryx-auth: every tenant has DefaultQuotas).
func OpenTenantStore(ctx context.Context, js jetstream.JetStream, prefix string) (*TenantStore, error) {
	s, err := OpenStore(ctx, js, prefix, false)
	if err != nil {
		return nil, err
	}
	return &TenantStore{kv: s.kv}, nil
}

// Quotas returns tenant's quotas with defaults filled in, or
// ErrUnknownTenant with DefaultQuotas.
func (ts *TenantStore) Quotas(ctx context.Context, tenant string) (Quotas, error) {
	t, err := (&Store{kv: ts.kv}).Tenant(ctx, tenant)
	if err != nil {
		return DefaultQuotas, err
	}
	return t.Quotas.WithDefaults(), nil
}
