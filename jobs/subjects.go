package jobs

import (
	"errors"
	"fmt"
	"strings"
)

// DefaultPrefix is the first token of every eryx subject.
const DefaultPrefix = "eryx"

// DefaultQueue is the queue jobs go to when none is named.
const DefaultQueue = "default"

// Subjects builds the platform's subjects and stream names under a prefix,
// so that several deployments can share one NATS account. The zero value
// uses DefaultPrefix.
type Subjects struct {
	Prefix string
}

// NewSubjects validates prefix (one or more dot-separated tokens).
func NewSubjects(prefix string) (Subjects, error) {
	if prefix == "" {
		prefix = DefaultPrefix
	}
	for _, tok := range strings.Split(prefix, ".") {
		if !ValidToken(tok) {
			return Subjects{}, fmt.Errorf("jobs: invalid subject prefix %q", prefix)
		}
	}
	return Subjects{Prefix: prefix}, nil
}

func (s Subjects) prefix() string {
	if s.Prefix == "" {
		return DefaultPrefix
	}
	return s.Prefix
}

// DefaultTenant is the tenant of single-tenant deployments: jobs.Client
// submits under it unless told otherwise (WithTenant).
const DefaultTenant = "default"

// PlatformTenant is the owner of platform-wide packages: "_platform/<name>"
// in the packages bucket. It is not a valid tenant name (tenants start
// with a letter or digit), so no tenant can be given it.
const PlatformTenant = "_platform"

// maxTenantLen bounds a tenant name.
const maxTenantLen = 63

// ErrInvalidTenant: a tenant name outside [a-z0-9][a-z0-9_-]{0,62}.
var ErrInvalidTenant = errors.New("jobs: invalid tenant name")

// ValidTenant checks a tenant name: one subject token of 1-63 lower-case
// letters, digits, '_' and '-', starting with a letter or digit. The
// tenant is the token every NATS permission of a tenant is written
// against, so it allows nothing a wildcard or a KV key could trip over.
func ValidTenant(t string) error {
	ok := t != "" && len(t) <= maxTenantLen
	for i := 0; ok && i < len(t); i++ {
		c := t[i]
		ok = c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || i > 0 && (c == '_' || c == '-')
	}
	if !ok {
		return fmt.Errorf("%w %q: use 1-%d lower-case letters, digits, '_' and '-', starting with a letter or digit",
			ErrInvalidTenant, truncateForReason(t), maxTenantLen)
	}
	return nil
}

// Jobs is the subject tenant publishes jobs of queue on:
// <prefix>.jobs.<queue>.<tenant>.
func (s Subjects) Jobs(queue, tenant string) string {
	if queue == "" {
		queue = DefaultQueue
	}
	if tenant == "" {
		tenant = DefaultTenant
	}
	return s.prefix() + ".jobs." + queue + "." + tenant
}

// QueueJobs matches every tenant's jobs of queue (a worker's filter).
func (s Subjects) QueueJobs(queue string) string {
	if queue == "" {
		queue = DefaultQueue
	}
	return s.prefix() + ".jobs." + queue + ".*"
}

// AllJobs matches every queue's jobs (the jobs stream's subject).
func (s Subjects) AllJobs() string { return s.prefix() + ".jobs.*.*" }

// LegacyJobs matches the jobs of protocol v1 (<prefix>.jobs.<queue>),
// which a worker moves to the default tenant at start.
func (s Subjects) LegacyJobs() string { return s.prefix() + ".jobs.*" }

// ParseJobs splits a job subject into its queue and tenant.
func (s Subjects) ParseJobs(subject string) (queue, tenant string, ok bool) {
	rest, found := strings.CutPrefix(subject, s.prefix()+".jobs.")
	if !found {
		return "", "", false
	}
	queue, tenant, found = strings.Cut(rest, ".")
	if !found || !ValidToken(queue) || ValidTenant(tenant) != nil {
		return "", "", false
	}
	return queue, tenant, true
}

// TenantPrefix is the first tokens of every per-job subject of tenant:
// <prefix>.t.<tenant>. One permission on TenantPrefix(T)+".>" covers a
// tenant's events, results and cancels.
func (s Subjects) TenantPrefix(tenant string) string {
	if tenant == "" {
		tenant = DefaultTenant
	}
	return s.prefix() + ".t." + tenant
}

// Event is the subject of one kind of event of tenant's job id:
// <prefix>.t.<tenant>.job.<id>.<kind>.
func (s Subjects) Event(tenant, id string, kind EventKind) string {
	return s.TenantPrefix(tenant) + ".job." + id + "." + string(kind)
}

// JobEvents matches every event (and the result) of tenant's job id.
func (s Subjects) JobEvents(tenant, id string) string {
	return s.TenantPrefix(tenant) + ".job." + id + ".*"
}

// AllEvents matches every job's events and results, across both streams.
func (s Subjects) AllEvents() string { return s.prefix() + ".t.*.job.*.*" }

// EventsStreamSubjects are the subjects of the events stream: stdout,
// stderr and trace of every job, and the worker's ordering barrier. The
// result subject is not among them: results have a stream of their own,
// which output cannot fill.
func (s Subjects) EventsStreamSubjects() []string {
	p := s.prefix() + ".t.*.job.*."
	return []string{p + string(EventStdout), p + string(EventStderr), p + string(EventTrace), s.EventsBarrier()}
}

// AllResults matches every job's result (the results stream's subject).
func (s Subjects) AllResults() string { return s.prefix() + ".t.*.job.*." + string(EventResult) }

// EventsBarrier is a subject of the events stream that nothing is ever
// stored on: a worker publishes to it, expecting a stream that cannot
// exist, so that the server's refusal tells it that every event it
// published before has been stored (a stream stores one connection's
// messages in order).
func (s Subjects) EventsBarrier() string { return s.prefix() + ".events.barrier" }

// WorkerHolds is the subject on which the workers of queue say which jobs
// they hold: asked before dead-lettering, so that no running job is.
func (s Subjects) WorkerHolds(queue string) string {
	if queue == "" {
		queue = DefaultQueue
	}
	return s.prefix() + ".workers." + queue + ".holds"
}

// Cancel is the subject that cancels tenant's job id:
// <prefix>.t.<tenant>.cancel.<id>.
func (s Subjects) Cancel(tenant, id string) string { return s.TenantPrefix(tenant) + ".cancel." + id }

// AllCancels matches every tenant's cancel messages.
func (s Subjects) AllCancels() string { return s.prefix() + ".t.*.cancel.*" }

// ParseCancel splits a cancel subject into its tenant and job id.
func (s Subjects) ParseCancel(subject string) (tenant, id string, ok bool) {
	rest, found := strings.CutPrefix(subject, s.prefix()+".t.")
	if !found {
		return "", "", false
	}
	tenant, rest, found = strings.Cut(rest, ".cancel.")
	if !found || ValidTenant(tenant) != nil || !ValidToken(rest) {
		return "", "", false
	}
	return tenant, rest, true
}

// DeadLetter is the subject dead-lettered jobs of queue and tenant are
// copied to: <prefix>.dlq.<queue>.<tenant>.
func (s Subjects) DeadLetter(queue, tenant string) string {
	if tenant == "" {
		tenant = DefaultTenant
	}
	return s.prefix() + ".dlq." + queue + "." + tenant
}

// AllDeadLetters matches every queue's dead letters.
func (s Subjects) AllDeadLetters() string { return s.prefix() + ".dlq.*.*" }

// MsgID is the Nats-Msg-Id of tenant's job id, "<tenant>.<id>".
func MsgID(tenant, id string) string { return tenant + "." + id }

// SessionKey is the key of tenant's session in the sessions bucket,
// "<tenant>.<session>": the same session id in two tenants is two
// sessions.
func SessionKey(tenant, session string) string { return tenant + "." + session }

// PackageObject is the name of tenant's package in the packages bucket,
// "<tenant>/<name>"; PackageObject(PlatformTenant, name) is the
// platform-wide one.
func PackageObject(tenant, name string) string { return tenant + "/" + name }

// streamName derives a stream or bucket name from the prefix, so that the
// default prefix gives ERYX_JOBS and "acme.eryx" gives ACME_ERYX_JOBS.
func (s Subjects) streamName(suffix string) string {
	up := strings.ToUpper(strings.ReplaceAll(s.prefix(), ".", "_"))
	return up + "_" + suffix
}

// JobsStream is the work-queue stream of jobs (ERYX_JOBS).
func (s Subjects) JobsStream() string { return s.streamName("JOBS") }

// EventsStream keeps every job's stdout, stderr and trace events for a
// bounded time (ERYX_EVENTS).
func (s Subjects) EventsStream() string { return s.streamName("EVENTS") }

// ResultsStream keeps every job's one result (ERYX_RESULTS).
func (s Subjects) ResultsStream() string { return s.streamName("RESULTS") }

// ControlStream keeps cancel messages, so that a job cancelled while
// queued is known to whichever worker fetches it (ERYX_CONTROL).
func (s Subjects) ControlStream() string { return s.streamName("CONTROL") }

// DeadLetterStream keeps jobs that exhausted their deliveries (ERYX_DLQ).
func (s Subjects) DeadLetterStream() string { return s.streamName("DLQ") }

// AdvisoriesStream keeps the server's max-deliveries advisories about the
// jobs stream, so that none is lost while no worker is connected.
func (s Subjects) AdvisoriesStream() string { return s.streamName("ADVISORIES") }

// AllMaxDeliveriesAdvisories matches the advisories of every queue's consumer.
func (s Subjects) AllMaxDeliveriesAdvisories() string {
	return "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES." + s.JobsStream() + ".*"
}

// PackagesBucket is the object store of packages jobs import (ERYX_PACKAGES).
func (s Subjects) PackagesBucket() string { return s.streamName("PACKAGES") }

// FilesBucket is tenant's object store of jobs' input and output files
// (ERYX_FILES_<tenant>). One bucket per tenant, because NATS permissions
// can scope a bucket (its name is a subject token) but not the objects in
// it (their subjects carry base64 names).
func (s Subjects) FilesBucket(tenant string) string { return s.streamName("FILES_" + tenant) }

// DrainsBucket is the KV bucket in which workers count, per stream
// sequence of a queued job, the deliveries they handed back without
// failing (drains): those do not spend the job's delivery budget
// (ERYX_DRAINS, keys are stream sequences).
func (s Subjects) DrainsBucket() string { return s.streamName("DRAINS") }

// SessionsBucket is the KV bucket of session snapshots (ERYX_SESSIONS).
func (s Subjects) SessionsBucket() string { return s.streamName("SESSIONS") }

// SessionBlobsBucket holds session snapshots too large for a KV value
// (ERYX_SESSION_BLOBS).
func (s Subjects) SessionBlobsBucket() string { return s.streamName("SESSION_BLOBS") }

// ConsumerName is the durable consumer every worker of queue shares.
func (s Subjects) ConsumerName(queue string) string {
	if queue == "" {
		queue = DefaultQueue
	}
	return "workers-" + queue
}

// TenantConsumerName is the durable consumer of tenant's jobs of queue,
// "workers-<queue>~<tenant>", which every worker of queue shares: one per
// tenant, so that workers can take tenants in turn (fair share). '~' is in
// neither a queue nor a tenant name, so the name is unambiguous.
func (s Subjects) TenantConsumerName(queue, tenant string) string {
	return s.ConsumerName(queue) + "~" + tenant
}

// ParseTenantConsumer is the inverse of TenantConsumerName for queue: the
// tenant, if name is one of queue's tenant consumers.
func (s Subjects) ParseTenantConsumer(queue, name string) (tenant string, ok bool) {
	tenant, ok = strings.CutPrefix(name, s.ConsumerName(queue)+"~")
	return tenant, ok && ValidTenant(tenant) == nil
}

// MaxDeliveriesAdvisory is the subject on which the server announces that a
// job of stream/consumer exhausted its deliveries.
func MaxDeliveriesAdvisory(stream, consumer string) string {
	return "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES." + stream + "." + consumer
}

// maxIDLen bounds ids and queue names: they end up in subjects, headers
// and KV keys.
const maxIDLen = 128

// ValidToken reports whether s can be used as one subject token: job ids,
// session ids, queue names. It allows letters, digits, '-', '_' and '='
// (so base64url and UUIDs fit), which are also valid KV keys and stream
// name characters.
func ValidToken(s string) bool {
	if s == "" || len(s) > maxIDLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case c == '-' || c == '_' || c == '=':
		default:
			return false
		}
	}
	return true
}

// lastToken returns the last token of a subject.
func lastToken(subject string) string {
	if i := strings.LastIndexByte(subject, '.'); i >= 0 {
		return subject[i+1:]
	}
	return subject
}

// ParseEvent splits an event subject into its tenant, job id and kind.
func (s Subjects) ParseEvent(subject string) (tenant, id string, kind EventKind, ok bool) {
	rest, found := strings.CutPrefix(subject, s.prefix()+".t.")
	if !found {
		return "", "", "", false
	}
	tenant, rest, found = strings.Cut(rest, ".job.")
	if !found || ValidTenant(tenant) != nil {
		return "", "", "", false
	}
	id, k, found := strings.Cut(rest, ".")
	if !found || !ValidToken(id) || strings.Contains(k, ".") {
		return "", "", "", false
	}
	return tenant, id, EventKind(k), true
}
