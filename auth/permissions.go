// Package auth is eryx's identity layer on NATS: the permission sets of
// every role (one source for the auth-callout service and the static
// server configuration alike), the store of tenants and API keys, and the
// auth-callout handler that turns an API key into a NATS user with those
// permissions. The subjects follow the v2 layout of docs/protocol.md:
// everything a tenant owns sits under <prefix>.t.<tenant> or ends in the
// tenant token, so one rule per tenant scopes it.
package auth

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats.go"

	"github.com/eryx-dev/eryx/jobs"
)

// Role is what an identity may do on the bus.
type Role string

// The roles. A submitter belongs to one tenant; workers, callback services
// and admins are platform-wide.
const (
	RoleSubmitter Role = "submitter"
	RoleWorker    Role = "worker"
	RoleCallback  Role = "callback"
	RoleAdmin     Role = "admin"
)

// Roles lists the roles keys can be issued for.
var Roles = []Role{RoleSubmitter, RoleWorker, RoleCallback, RoleAdmin}

// ErrInvalid marks a name (tenant, queue, callback, prefix) or role that
// cannot be used.
var ErrInvalid = errors.New("auth: invalid")

// validTenant is jobs.ValidTenant (the one definition of a tenant name),
// marked ErrInvalid as well for the callers of this package.
func validTenant(name string) error {
	if err := jobs.ValidTenant(name); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return nil
}

// ValidRole checks a role name.
func ValidRole(r Role) error {
	if !slices.Contains(Roles, r) {
		return fmt.Errorf("%w role %q: want one of %v", ErrInvalid, r, Roles)
	}
	return nil
}

func validPrefix(prefix string) (jobs.Subjects, error) {
	s, err := jobs.NewSubjects(prefix)
	if err != nil {
		return jobs.Subjects{}, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return s, nil
}

func validToken(kind, v string) error {
	if !jobs.ValidToken(v) {
		return fmt.Errorf("%w %s %q: one subject token of letters, digits, '-', '_', '='", ErrInvalid, kind, v)
	}
	return nil
}

// responses lets a service answer the requests it receives, once each,
// and nothing else: NATS's allow_responses.
var responses = &jwt.ResponsePermission{MaxMsgs: 1, Expires: 2 * time.Minute}

// denyAll are publish denials of every role: the server's advisories
// (a forged max-deliveries advisory would dead-letter a job) and the
// auth-callout subject.
func denyAll() []string {
	return []string{"$JS.EVENT.>", "$SYS.>"}
}

// InboxPrefix is the inbox prefix a client of role must use
// (nats.CustomInboxPrefix): replies — JetStream acks, direct gets,
// consumer deliveries — travel on inbox subjects, and whoever may
// subscribe to "_INBOX.>" reads every other client's replies. Each
// identity may subscribe only under its own prefix. name is the tenant
// of a submitter and the queue of a worker; callback services make no
// requests and admins use the default "_INBOX".
func InboxPrefix(prefix string, role Role, name string) string {
	if prefix == "" {
		prefix = jobs.DefaultPrefix
	}
	switch role {
	case RoleSubmitter:
		if name == "" {
			name = jobs.DefaultTenant
		}
		return "_INBOX." + prefix + ".t." + name
	case RoleWorker:
		if name == "" {
			name = jobs.DefaultQueue
		}
		return "_INBOX." + prefix + ".w." + name
	case roleAuth:
		return "_INBOX." + prefix + ".auth"
	default:
		return "_INBOX"
	}
}

// ConnectOptions are the nats.Connect options an identity of role needs
// under these permissions: today its inbox prefix (InboxPrefix). name is
// the submitter's tenant or the worker's queue. Every eryx client passes
// them, with or without authorization: on an open server they change
// nothing but the inbox subjects.
func ConnectOptions(prefix string, role Role, name string) []nats.Option {
	return []nats.Option{nats.CustomInboxPrefix(InboxPrefix(prefix, role, name))}
}

// roleAuth is the auth service's own identity; it has no keys.
const roleAuth Role = "auth"

// SubmitterPermissions are tenant's: publish jobs to queues (all queues
// if none are named) and cancels of its own jobs; read its own events and
// results (live, through ordered consumers filtered on its subjects, and
// by direct get of the last message on its subjects); nothing else. It
// cannot publish events or results, cannot read another tenant's subjects,
// and has no access to sessions, packages or the jobs stream's contents.
func SubmitterPermissions(prefix, tenant string, queues ...string) (jwt.Permissions, error) {
	s, err := validPrefix(prefix)
	if err != nil {
		return jwt.Permissions{}, err
	}
	if err := validTenant(tenant); err != nil {
		return jwt.Permissions{}, err
	}
	own := s.TenantPrefix(tenant) + ".>"
	var pub []string
	if len(queues) == 0 {
		pub = append(pub, s.Jobs("*", tenant))
	}
	for _, q := range queues {
		if err := validToken("queue", q); err != nil {
			return jwt.Permissions{}, err
		}
		pub = append(pub, s.Jobs(q, tenant))
	}
	pub = append(pub, s.Cancel(tenant, "*"))
	for _, st := range []string{s.EventsStream(), s.ResultsStream()} {
		pub = append(pub,
			// js.Stream() needs the stream's info; it names subjects
			// (job ids) and counts, never contents.
			"$JS.API.STREAM.INFO."+st,
			// Direct get of the last message on a subject: the subject is in
			// the API subject, so the permission scopes it. The other
			// forms (by sequence, next-by-subject) carry the subject in the
			// payload and are not allowed.
			"$JS.API.DIRECT.GET."+st+"."+own,
			// Ordered consumers: the filter is in the API subject and the
			// server refuses a request whose payload filter differs.
			"$JS.API.CONSUMER.CREATE."+st+".*."+own,
			"$JS.API.CONSUMER.MSG.NEXT."+st+".*",
			"$JS.API.CONSUMER.INFO."+st+".*",
			"$JS.API.CONSUMER.DELETE."+st+".*",
		)
	}
	// The tenant's files bucket, which a worker or eryx-admin made: put,
	// get, list and delete objects (the object store client's own
	// requests), but not create, update or delete the bucket, so its TTL
	// and size stay the operator's.
	files := s.FilesBucket(tenant)
	fst := "OBJ_" + files
	pub = append(pub,
		"$O."+files+".>",
		"$JS.API.STREAM.INFO."+fst,
		"$JS.API.DIRECT.GET."+fst+".>",
		"$JS.API.STREAM.PURGE."+fst, // the chunks of a replaced or deleted object
		"$JS.API.CONSUMER.CREATE."+fst+".*.>",
		"$JS.API.CONSUMER.MSG.NEXT."+fst+".*",
		"$JS.API.CONSUMER.INFO."+fst+".*",
		"$JS.API.CONSUMER.DELETE."+fst+".*",
	)
	jobSubjects := s.TenantPrefix(tenant) + ".job.>"
	return jwt.Permissions{
		Pub: jwt.Permission{Allow: pub, Deny: append(denyAll(), jobSubjects)},
		Sub: jwt.Permission{Allow: []string{
			jobSubjects,
			InboxPrefix(s.Prefix, RoleSubmitter, tenant) + ".>",
		}},
	}, nil
}

// streamAPI allows creating, updating and reading a stream and reading
// its messages.
func streamAPI(stream string) []string {
	return []string{
		"$JS.API.STREAM.CREATE." + stream,
		"$JS.API.STREAM.UPDATE." + stream,
		"$JS.API.STREAM.INFO." + stream,
		"$JS.API.STREAM.MSG.GET." + stream,
		"$JS.API.DIRECT.GET." + stream,
		"$JS.API.DIRECT.GET." + stream + ".>",
	}
}

// consumerAPI allows one consumer (or, with name "*", any) of stream.
func consumerAPI(stream, name string) []string {
	return []string{
		"$JS.API.CONSUMER.CREATE." + stream + "." + name,
		"$JS.API.CONSUMER.CREATE." + stream + "." + name + ".>",
		"$JS.API.CONSUMER.INFO." + stream + "." + name,
		"$JS.API.CONSUMER.MSG.NEXT." + stream + "." + name,
		"$JS.API.CONSUMER.DELETE." + stream + "." + name,
	}
}

// WorkerPermissions are a worker's of queue: it fetches and acknowledges
// the queue's jobs of every tenant, publishes their events, results and
// dead letters, manages the streams, sessions and session blobs, reads
// packages and the tenants' quotas, reads and writes jobs' files, calls and discovers callbacks, and
// answers its peers' holds requests. It cannot submit jobs (no publish on
// <prefix>.jobs.>), subscribe to tenants' events, write packages, or read
// API keys.
func WorkerPermissions(prefix, queue string) (jwt.Permissions, error) {
	s, err := validPrefix(prefix)
	if err != nil {
		return jwt.Permissions{}, err
	}
	if queue == "" {
		queue = jobs.DefaultQueue
	}
	if err := validToken("queue", queue); err != nil {
		return jwt.Permissions{}, err
	}
	p := s.Prefix
	kv := "KV_" + s.SessionsBucket()
	blobs := "OBJ_" + s.SessionBlobsBucket()
	pkgs := "OBJ_" + s.PackagesBucket()
	authKV := "KV_" + authBucket(s)
	drains := "KV_" + s.DrainsBucket()      // drained deliveries, by stream sequence
	pub := append(s.EventsStreamSubjects(), // every tenant's stdout, stderr, trace; the barrier
		s.AllResults(),
		s.AllCancels(),
		s.DeadLetter(queue, "*"),
		s.WorkerHolds(queue),
		p+".cb.>",
		"$SRV.>",
		"$JS.ACK."+s.JobsStream()+".>",
		"$JS.ACK."+s.AdvisoriesStream()+".>",
		"$JS.FC.>",
		"$KV."+s.SessionsBucket()+".>",
		"$KV."+s.DrainsBucket()+".>",
		"$O."+s.SessionBlobsBucket()+".>",
		"$JS.API.INFO",
	)
	for _, st := range []string{s.JobsStream(), s.EventsStream(), s.ResultsStream(), s.ControlStream(),
		s.DeadLetterStream(), s.AdvisoriesStream(), kv, blobs, pkgs, drains} {
		pub = append(pub, streamAPI(st)...)
	}
	pub = append(pub,
		// dead-lettering deletes the job from the work queue
		"$JS.API.STREAM.MSG.DELETE."+s.JobsStream(),
		// jobs on a subject without a valid tenant are dropped
		"$JS.API.STREAM.PURGE."+s.JobsStream(),
		"$JS.API.STREAM.MSG.DELETE."+kv,
		"$JS.API.STREAM.PURGE."+kv,
		"$JS.API.STREAM.PURGE."+blobs,
	)
	// One consumer per tenant of the queue (fair share): the consumer's
	// filter is in the create request's subject, so a worker can only
	// create consumers on its queue's jobs. Pulling is by consumer name,
	// and names cannot be matched by prefix: a worker could pull from
	// another queue's consumers (see docs/security.md).
	pub = append(pub,
		"$JS.API.CONSUMER.CREATE."+s.JobsStream()+".*."+s.QueueJobs(queue),
		"$JS.API.CONSUMER.INFO."+s.JobsStream()+".*",
		"$JS.API.CONSUMER.MSG.NEXT."+s.JobsStream()+".*",
		"$JS.API.CONSUMER.DELETE."+s.JobsStream()+"."+s.ConsumerName(queue), // the catch-all consumer of before
		"$JS.API.CONSUMER.CREATE."+s.AdvisoriesStream()+".*."+jobs.MaxDeliveriesAdvisory(s.JobsStream(), "*"),
		"$JS.API.CONSUMER.INFO."+s.AdvisoriesStream()+".*",
		"$JS.API.CONSUMER.MSG.NEXT."+s.AdvisoriesStream()+".*",
		"$JS.API.CONSUMER.DELETE."+s.AdvisoriesStream()+".dlq-"+s.ConsumerName(queue),
	)
	for _, st := range []string{kv, blobs, pkgs} {
		pub = append(pub, consumerAPI(st, "*")...)
	}
	pub = append(pub, tenantFilesAPI()...)
	// quotas: the tenants' records, not the keys
	pub = append(pub,
		"$JS.API.STREAM.INFO."+authKV,
		"$JS.API.DIRECT.GET."+authKV+".$KV."+authBucket(s)+"."+tenantsKey+".>",
	)
	deny := append(denyAll(), p+".jobs.>")
	deny = append(deny, tenantFilesDeny(s, authKV)...)
	return jwt.Permissions{
		Pub: jwt.Permission{Allow: pub, Deny: deny},
		Sub: jwt.Permission{Allow: []string{
			s.AllCancels(),
			s.WorkerHolds(queue),
			// the fair-share doorbell: which tenants just queued jobs
			s.QueueJobs(queue),
			InboxPrefix(p, RoleWorker, queue) + ".>",
		}},
		Resp: responses,
	}, nil
}

// tenantFilesAPI is a worker's access to every tenant's files bucket
// (<prefix>_FILES_<tenant>, made on first use). NATS wildcards match
// whole tokens and a bucket name is one, so no rule matches
// "<prefix>_FILES_*": the rules name any stream, and narrow what they can
// by the object-store subjects in the API subject (direct gets of
// metadata, consumers filtered on chunks or metadata). What they would
// also reach beyond the files buckets is denied by tenantFilesDeny.
func tenantFilesAPI() []string {
	return []string{
		"$O.*.>",
		"$JS.API.STREAM.CREATE.*",
		"$JS.API.STREAM.UPDATE.*",
		"$JS.API.STREAM.INFO.*",
		"$JS.API.STREAM.PURGE.*",
		"$JS.API.DIRECT.GET.*.$O.*.M.*",
		"$JS.API.CONSUMER.CREATE.*.*.$O.*.C.*",
		"$JS.API.CONSUMER.CREATE.*.*.$O.*.M.>",
		"$JS.API.CONSUMER.MSG.NEXT.*.*",
		"$JS.API.CONSUMER.INFO.*.*",
		// the object store client deletes its ordered consumers
		"$JS.API.CONSUMER.DELETE.*.*",
	}
}

// tenantFilesDeny takes back what tenantFilesAPI grants beyond the
// worker's own: writing packages, reconfiguring the auth bucket, and
// purging the streams it must not empty.
func tenantFilesDeny(s jobs.Subjects, authKV string) []string {
	deny := []string{
		"$O." + s.PackagesBucket() + ".>",
		"$JS.API.STREAM.CREATE." + authKV,
		"$JS.API.STREAM.UPDATE." + authKV,
	}
	for _, st := range []string{s.EventsStream(), s.ResultsStream(), s.ControlStream(),
		s.DeadLetterStream(), s.AdvisoriesStream(), "OBJ_" + s.PackagesBucket(), authKV} {
		deny = append(deny, "$JS.API.STREAM.PURGE."+st)
	}
	return deny
}

// CallbackServicePermissions are a callback service's serving names:
// it may subscribe to <prefix>.cb.<name> for those names only (so it is
// reachable only on the subjects of its own names), answer discovery
// pings, and reply to requests it received. It publishes nothing else.
func CallbackServicePermissions(prefix string, names []string) (jwt.Permissions, error) {
	s, err := validPrefix(prefix)
	if err != nil {
		return jwt.Permissions{}, err
	}
	if len(names) == 0 {
		return jwt.Permissions{}, fmt.Errorf("%w: a callback identity needs at least one callback name", ErrInvalid)
	}
	sub := []string{"$SRV.PING", "$SRV.INFO", "$SRV.STATS", "$SRV.PING.>", "$SRV.INFO.>", "$SRV.STATS.>"}
	for _, n := range names {
		if err := validToken("callback name", n); err != nil {
			return jwt.Permissions{}, err
		}
		sub = append(sub, s.Prefix+".cb."+n)
	}
	return jwt.Permissions{
		// Nothing may be published but the replies allow_responses lets
		// through (the server checks those after the deny list).
		Pub:  jwt.Permission{Deny: []string{">"}},
		Sub:  jwt.Permission{Allow: sub},
		Resp: responses,
	}, nil
}

// AdminPermissions are an operator's: everything in the account except
// forging server advisories and reading authorization requests (they
// carry API keys).
func AdminPermissions() jwt.Permissions {
	return jwt.Permissions{
		Pub: jwt.Permission{Allow: []string{">"}, Deny: []string{"$JS.EVENT.>", "$SYS.REQ.USER.AUTH"}},
		Sub: jwt.Permission{Allow: []string{">"}, Deny: []string{"$SYS.REQ.USER.AUTH"}},
	}
}

// AuthServicePermissions are eryx-auth's (and eryx-admin's when it runs
// with eryx-auth's credentials): receive authorization requests and
// answer them, manage the ERYX_AUTH bucket, and create tenants' files
// buckets. It is the one static user
// of an auth-callout deployment (the callout's auth_users).
func AuthServicePermissions(prefix string) (jwt.Permissions, error) {
	s, err := validPrefix(prefix)
	if err != nil {
		return jwt.Permissions{}, err
	}
	b := authBucket(s)
	st := "KV_" + b
	pub := append([]string{"$KV." + b + ".>", "$JS.API.INFO",
		"$JS.API.STREAM.MSG.DELETE." + st, "$JS.API.STREAM.PURGE." + st}, streamAPI(st)...)
	pub = append(pub, consumerAPI(st, "*")...)
	// eryx-admin tenant add makes the tenant's files bucket
	// (jobs.Topology.EnsureFilesBucket); its name is one token, so no
	// rule narrower than any stream matches it. This identity can already
	// issue admin keys.
	pub = append(pub, "$JS.API.STREAM.CREATE.*", "$JS.API.STREAM.UPDATE.*", "$JS.API.STREAM.INFO.*")
	return jwt.Permissions{
		Pub: jwt.Permission{Allow: pub, Deny: []string{"$JS.EVENT.>"}},
		Sub: jwt.Permission{Allow: []string{
			"$SYS.REQ.USER.AUTH",
			InboxPrefix(s.Prefix, roleAuth, "") + ".>",
		}},
		Resp: responses,
	}, nil
}

// PermissionsFor returns the permissions of a key's role.
func PermissionsFor(prefix string, k Key) (jwt.Permissions, error) {
	switch k.Role {
	case RoleSubmitter:
		return SubmitterPermissions(prefix, k.Tenant, k.Queues...)
	case RoleWorker:
		return WorkerPermissions(prefix, k.Queue)
	case RoleCallback:
		return CallbackServicePermissions(prefix, k.Callbacks)
	case RoleAdmin:
		return AdminPermissions(), nil
	default:
		return jwt.Permissions{}, fmt.Errorf("%w role %q", ErrInvalid, k.Role)
	}
}

// RenderConfig renders permissions as a nats-server configuration
// "permissions { ... }" block, indented by indent, for a static user of
// the server configuration (the alternative to the callout for small
// installs).
func RenderConfig(p jwt.Permissions, indent string) string {
	var b strings.Builder
	line := func(depth int, format string, args ...any) {
		b.WriteString(indent + strings.Repeat("  ", depth))
		fmt.Fprintf(&b, format, args...)
		b.WriteByte('\n')
	}
	list := func(xs []string) string {
		q := make([]string, len(xs))
		for i, x := range xs {
			q[i] = `"` + x + `"`
		}
		return "[" + strings.Join(q, ", ") + "]"
	}
	section := func(name string, perm jwt.Permission) {
		if perm.Empty() {
			return
		}
		line(1, "%s {", name)
		if len(perm.Allow) > 0 {
			line(2, "allow: %s", list(perm.Allow))
		}
		if len(perm.Deny) > 0 {
			line(2, "deny: %s", list(perm.Deny))
		}
		line(1, "}")
	}
	line(0, "permissions {")
	section("publish", p.Pub)
	section("subscribe", p.Sub)
	if p.Resp != nil {
		line(1, "allow_responses { max: %d, expires: %q }", p.Resp.MaxMsgs, p.Resp.Expires.String())
	}
	line(0, "}")
	return b.String()
}
