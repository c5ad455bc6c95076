// Command eryx-admin manages tenants and API keys (in the ERYX_AUTH
// bucket eryx-auth reads) and prints permission sets and server
// configuration (docs/cli.md).
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"

	"github.com/eryx-dev/eryx/auth"
	"github.com/eryx-dev/eryx/jobs"
)

const usage = `usage: eryx-admin <command> [flags]

  tenant add NAME [--queues q1,q2] [quota flags] [--files-ttl D] [--files-max-mib N]
                                      also creates the tenant's files bucket
  tenant set NAME [quota flags]       replace the tenant's quotas
  tenant rm NAME                      remove the tenant and its keys
  tenant ls
  key issue --role submitter|worker|callback|admin [--tenant T] [--queue Q] [--callbacks a,b] [--description D]
  key revoke ID
  key ls
  permissions --role R [--tenant T] [--queue Q] [--callbacks a,b]   print a nats-server permissions block
  issuer                              make a new issuer account nkey for eryx-auth
  nats-config --issuer PUBKEY [--auth-password '$AUTH_PASSWORD']    print the accounts and auth_callout blocks

Connection flags (tenant, key): --nats URL (ERYX_NATS_URL), --user/--password
(ERYX_AUTH_USER/ERYX_AUTH_PASSWORD: eryx-auth's static user) or --key (ERYX_ADMIN_KEY:
an admin API key). --prefix (ERYX_SUBJECT_PREFIX) everywhere.`

func main() {
	os.Exit(run(context.Background(), os.Args[1:], os.Stdout, os.Stderr))
}

type env struct {
	stdout, stderr io.Writer
}

func (e env) fail(format string, args ...any) int {
	fmt.Fprintf(e.stderr, "eryx-admin: "+format+"\n", args...)
	return 1
}

func getenv(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// opts are every command's flags; each command uses some.
type opts struct {
	url, user, password, key, prefix string
	role, tenant, queue, description string
	queues, callbacks                string
	issuer, authPassword             string
	json                             bool
	quotas                           auth.Quotas
	memory                           int64
	filesTTL                         time.Duration
	filesMiB                         int64
}

func (o *opts) register(fs *flag.FlagSet) {
	fs.StringVar(&o.url, "nats", getenv("ERYX_NATS_URL", nats.DefaultURL), "NATS URL")
	fs.StringVar(&o.user, "user", getenv("ERYX_AUTH_USER", auth.AuthUser), "static user (eryx-auth's)")
	fs.StringVar(&o.password, "password", os.Getenv("ERYX_AUTH_PASSWORD"), "its password")
	fs.StringVar(&o.key, "key", os.Getenv("ERYX_ADMIN_KEY"), "admin API key (instead of --user/--password)")
	fs.StringVar(&o.prefix, "prefix", getenv("ERYX_SUBJECT_PREFIX", "eryx"), "subject prefix")
	fs.StringVar(&o.role, "role", "", "role of the key: submitter, worker, callback, admin")
	fs.StringVar(&o.tenant, "tenant", "", "tenant of a submitter")
	fs.StringVar(&o.queue, "queue", "", "queue of a worker")
	fs.StringVar(&o.queues, "queues", "", "queues the tenant (or key) may submit to, comma-separated; empty: all")
	fs.StringVar(&o.callbacks, "callbacks", "", "callback names a callback service may serve, comma-separated")
	fs.StringVar(&o.description, "description", "", "note kept with the key")
	fs.StringVar(&o.issuer, "issuer", "", "public account nkey of eryx-auth's issuer")
	fs.StringVar(&o.authPassword, "auth-password", "$AUTH_PASSWORD", "eryx-auth's password in the config (a $VARIABLE keeps it out of the file)")
	fs.BoolVar(&o.json, "json", false, "print JSON")
	fs.IntVar(&o.quotas.MaxRunning, "max-running", 0, "quota: jobs running at once (0: default)")
	fs.IntVar(&o.quotas.MaxQueued, "max-queued", 0, "quota: jobs queued (0: default)")
	fs.IntVar(&o.quotas.SubmissionsPerSecond, "submissions-per-second", 0, "quota: new jobs per second (0: default)")
	fs.Int64Var(&o.memory, "memory-per-job", 0, "quota: memory one job may ask for, MiB (0: default)")
	fs.IntVar(&o.quotas.ExecSecondsPerHour, "exec-seconds-per-hour", 0, "quota: execution seconds per hour (0: default)")
	fs.DurationVar(&o.filesTTL, "files-ttl", jobs.DefaultFilesTTL, "tenant add: lifetime of the tenant's files (the workers' ERYX_FILES_TTL)")
	fs.Int64Var(&o.filesMiB, "files-max-mib", jobs.DefaultFilesBucketBytes>>20, "tenant add: size of the tenant's files bucket, MiB (the workers' ERYX_FILES_BUCKET_MAX_BYTES)")
}

func split(s string) []string {
	var out []string
	for _, x := range strings.Split(s, ",") {
		if x = strings.TrimSpace(x); x != "" {
			out = append(out, x)
		}
	}
	return out
}

// parse parses flags anywhere among the positional arguments.
func parse(e env, name string, args []string) (*opts, []string, error) {
	o := &opts{}
	fs := flag.NewFlagSet("eryx-admin "+name, flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	o.register(fs)
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, nil, err
		}
		args = fs.Args()
		if len(args) == 0 {
			break
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
	o.quotas.MemoryPerJob = o.memory << 20
	return o, pos, nil
}

func (o *opts) store(ctx context.Context) (*auth.Store, jetstream.JetStream, func(), error) {
	cred := nats.UserInfo(o.user, o.password)
	inbox := auth.InboxPrefix(o.prefix, "auth", "")
	if o.key != "" {
		cred, inbox = nats.Token(o.key), "_INBOX"
	}
	nc, err := nats.Connect(o.url, cred, nats.Name("eryx-admin"), nats.CustomInboxPrefix(inbox))
	if err != nil {
		return nil, nil, nil, fmt.Errorf("connecting to %s: %w", o.url, err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, nil, nil, err
	}
	s, err := auth.OpenStore(ctx, js, o.prefix, true)
	if err != nil {
		nc.Close()
		return nil, nil, nil, err
	}
	return s, js, nc.Close, nil
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	e := env{stdout: stdout, stderr: stderr}
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprintln(stdout, usage)
		return 0
	}
	cmd := args[0]
	if (cmd == "tenant" || cmd == "key") && len(args) > 1 {
		cmd += " " + args[1]
		args = args[1:]
	}
	o, pos, err := parse(e, cmd, args[1:])
	if err != nil {
		return 2
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	switch cmd {
	case "permissions":
		return cmdPermissions(e, o)
	case "issuer":
		kp, err := nkeys.CreateAccount()
		if err != nil {
			return e.fail("%v", err)
		}
		seed, _ := kp.Seed()
		pub, _ := kp.PublicKey()
		fmt.Fprintf(stdout, "# public key: the server's auth_callout issuer (eryx-admin nats-config --issuer)\n%s\n", pub)
		fmt.Fprintf(stdout, "# seed: ERYX_AUTH_ISSUER_SEED of eryx-auth; keep it secret\n%s\n", seed)
		return 0
	case "nats-config":
		text, err := auth.ServerConfig{Prefix: o.prefix, Issuer: o.issuer, AuthPassword: o.authPassword}.Render()
		if err != nil {
			return e.fail("%v", err)
		}
		if o.issuer == "" {
			return e.fail("--issuer is required (eryx-admin issuer makes one)")
		}
		fmt.Fprint(stdout, text)
		return 0
	case "tenant add", "tenant set", "tenant rm", "tenant ls", "key issue", "key revoke", "key ls":
	default:
		fmt.Fprintln(stderr, usage)
		return 2
	}
	s, js, closeFn, err := o.store(ctx)
	if err != nil {
		return e.fail("%v", err)
	}
	defer closeFn()
	if cmd == "tenant add" && o.filesMiB < 1 {
		return e.fail("--files-max-mib must be at least 1")
	}
	if code := cmdStore(ctx, e, s, cmd, o, pos); code != 0 || cmd != "tenant add" {
		return code
	}
	// The tenant's files bucket, so that it can upload before its first
	// job: a submitter cannot create it (docs/files.md).
	top := jobs.Topology{Subjects: jobs.Subjects{Prefix: o.prefix}, FilesTTL: o.filesTTL, FilesMaxBytes: o.filesMiB << 20}
	if _, err := top.EnsureFilesBucket(ctx, js, pos[0]); err != nil {
		return e.fail("tenant %s added, but not its files bucket (a worker makes it at the tenant's first job): %v", pos[0], err)
	}
	fmt.Fprintf(e.stdout, "files bucket %s ready\n", top.Subjects.FilesBucket(pos[0]))
	return 0
}

func cmdPermissions(e env, o *opts) int {
	k := auth.Key{Role: auth.Role(o.role), Tenant: o.tenant, Queue: o.queue, Queues: split(o.queues), Callbacks: split(o.callbacks)}
	if k.Role == "auth" {
		p, err := auth.AuthServicePermissions(o.prefix)
		if err != nil {
			return e.fail("%v", err)
		}
		fmt.Fprint(e.stdout, auth.RenderConfig(p, ""))
		return 0
	}
	if err := auth.ValidRole(k.Role); err != nil {
		return e.fail("%v (or auth, for eryx-auth itself)", err)
	}
	p, err := auth.PermissionsFor(o.prefix, k)
	if err != nil {
		return e.fail("%v", err)
	}
	if o.json {
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(p)
		return 0
	}
	fmt.Fprint(e.stdout, auth.RenderConfig(p, ""))
	return 0
}

func one(e env, cmd string, pos []string) (string, bool) {
	if len(pos) != 1 {
		e.fail("%s takes one argument", cmd)
		return "", false
	}
	return pos[0], true
}

func cmdStore(ctx context.Context, e env, s *auth.Store, cmd string, o *opts, pos []string) int {
	switch cmd {
	case "tenant add":
		name, ok := one(e, cmd, pos)
		if !ok {
			return 2
		}
		t, err := s.AddTenant(ctx, auth.Tenant{Name: name, Queues: split(o.queues), Quotas: o.quotas})
		if err != nil {
			return e.fail("%v", err)
		}
		fmt.Fprintf(e.stdout, "tenant %s added\n", t.Name)
	case "tenant set":
		name, ok := one(e, cmd, pos)
		if !ok {
			return 2
		}
		if _, err := s.SetQuotas(ctx, name, o.quotas); err != nil {
			return e.fail("%v", err)
		}
		fmt.Fprintf(e.stdout, "tenant %s updated\n", name)
	case "tenant rm":
		name, ok := one(e, cmd, pos)
		if !ok {
			return 2
		}
		if err := s.RemoveTenant(ctx, name); err != nil {
			return e.fail("%v", err)
		}
		fmt.Fprintf(e.stdout, "tenant %s and its keys removed\n", name)
	case "tenant ls":
		ts, err := s.Tenants(ctx)
		if err != nil {
			return e.fail("%v", err)
		}
		tw := tabwriter.NewWriter(e.stdout, 1, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "TENANT\tQUEUES\tRUNNING\tQUEUED\tSUBMIT/S\tMEMORY/JOB\tEXEC-S/H")
		for _, t := range ts {
			q := t.Quotas.WithDefaults()
			queues := strings.Join(t.Queues, ",")
			if queues == "" {
				queues = "*"
			}
			fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%dMiB\t%d\n", t.Name, queues, q.MaxRunning, q.MaxQueued,
				q.SubmissionsPerSecond, q.MemoryPerJob>>20, q.ExecSecondsPerHour)
		}
		_ = tw.Flush()
	case "key issue":
		key, k, err := s.IssueKey(ctx, auth.KeySpec{Role: auth.Role(o.role), Tenant: o.tenant, Queue: o.queue,
			Queues: split(o.queues), Callbacks: split(o.callbacks), Description: o.description})
		if err != nil {
			return e.fail("%v", err)
		}
		fmt.Fprintf(e.stderr, "key %s (%s) issued; it is shown once, store it now\n", k.ID, k.Role)
		fmt.Fprintln(e.stdout, key)
	case "key revoke":
		id, ok := one(e, cmd, pos)
		if !ok {
			return 2
		}
		if err := s.RevokeKey(ctx, id); err != nil {
			return e.fail("%v", err)
		}
		fmt.Fprintf(e.stdout, "key %s revoked: new connections with it are refused\n", id)
	case "key ls":
		ks, err := s.Keys(ctx)
		if err != nil {
			return e.fail("%v", err)
		}
		tw := tabwriter.NewWriter(e.stdout, 1, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tROLE\tSCOPE\tCREATED\tDESCRIPTION")
		for _, k := range ks {
			scope := k.Tenant + k.Queue + strings.Join(k.Callbacks, ",")
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", k.ID, k.Role, scope, k.Created.Format(time.RFC3339), k.Description)
		}
		_ = tw.Flush()
	}
	return 0
}
