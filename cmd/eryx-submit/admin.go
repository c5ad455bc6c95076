package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/eryx-dev/eryx/callbacks/catalogue"
	"github.com/eryx-dev/eryx/jobs"
	"github.com/eryx-dev/eryx/kvstate"
)

func newID() string { return uuid.NewString() }

func printJSON(w io.Writer, v any) {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// adminFlags parses the flags of an administrative subcommand.
func adminFlags(e env, name string, args []string, extra func(*flag.FlagSet)) (*common, []string, bool) {
	c := &common{}
	fs := flag.NewFlagSet("eryx-submit "+name, flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	c.register(fs)
	if extra != nil {
		extra(fs)
	}
	pos, err := parseInterspersed(fs, args)
	return c, pos, err == nil
}

func cmdCallbacks(ctx context.Context, e env, args []string) int {
	var jsonOut bool
	c, pos, ok := adminFlags(e, "callbacks", args, func(fs *flag.FlagSet) {
		fs.BoolVar(&jsonOut, "json", false, "print the catalogue as JSON, with schemas")
	})
	if !ok || len(pos) != 0 {
		return e.errorf("usage: eryx-submit callbacks [--json]")
	}
	nc, _, err := c.connect()
	if err != nil {
		return e.errorf("%v", err)
	}
	defer nc.Close()
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	cat := catalogue.New(cctx, nc, catalogue.Options{Prefix: c.prefix, RefreshInterval: -1})
	defer cat.Close()
	entries, err := cat.Entries(cctx)
	if err != nil {
		return e.errorf("discovering callbacks: %v", err)
	}
	if jsonOut {
		if entries == nil {
			entries = []catalogue.Entry{}
		}
		printJSON(e.stdout, entries)
		return exitOK
	}
	if len(entries) == 0 {
		fmt.Fprintln(e.stderr, "no callback services found")
		return exitOK
	}
	tw := tabwriter.NewWriter(e.stdout, 1, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tSERVICE\tINSTANCES\tDESCRIPTION")
	for _, en := range entries {
		fmt.Fprintf(tw, "%s\t%s %s\t%d\t%s\n", en.Name, en.Service, en.Version, en.Instances, en.Description)
	}
	_ = tw.Flush()
	for _, en := range entries {
		if len(en.Schema) > 0 {
			fmt.Fprintf(e.stdout, "\n%s parameters: %s\n", en.Name, en.Schema)
		}
	}
	return exitOK
}

// openSessions opens the session store of the deployment, with the
// workers' snapshot key if one is given ($ERYX_SNAPSHOT_KEY or
// $ERYX_SNAPSHOT_KEY_FILE): reads are then verified, and restores tagged
// so that workers accept them.
func openSessions(ctx context.Context, client *jobs.Client) (*kvstate.Store, bool, error) {
	key := []byte(os.Getenv("ERYX_SNAPSHOT_KEY"))
	if f := os.Getenv("ERYX_SNAPSHOT_KEY_FILE"); len(key) == 0 && f != "" {
		data, err := os.ReadFile(f)
		if err != nil {
			return nil, false, fmt.Errorf("ERYX_SNAPSHOT_KEY_FILE: %w", err)
		}
		key = bytes.TrimSpace(data)
	}
	s := client.Subjects()
	st, err := kvstate.Open(ctx, client.JetStream(), kvstate.Config{
		Bucket: s.SessionsBucket(), BlobBucket: s.SessionBlobsBucket(), MACKey: key,
	})
	return st, len(key) > 0, err
}

func cmdSession(ctx context.Context, e env, args []string) int {
	const use = "usage: eryx-submit session list | snapshot ID [-o FILE] | restore ID FILE | delete ID"
	if len(args) == 0 {
		return e.errorf(use)
	}
	sub := args[0]
	var outFile string
	c, pos, ok := adminFlags(e, "session "+sub, args[1:], func(fs *flag.FlagSet) {
		if sub == "snapshot" {
			fs.StringVar(&outFile, "o", "", "write the snapshot to this file (default: stdout)")
		}
	})
	want := map[string]int{"list": 0, "snapshot": 1, "restore": 2, "delete": 1}
	n, known := want[sub]
	if !ok || !known || len(pos) != n {
		return e.errorf(use)
	}
	nc, client, err := c.connect()
	if err != nil {
		return e.errorf("%v", err)
	}
	defer nc.Close()
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	store, keyed, err := openSessions(cctx, client)
	if err != nil {
		return e.errorf("opening the session store: %v", err)
	}
	// Sessions are the tenant's: key "<tenant>.<session>".
	tenant := client.Tenant()
	var key string
	if n > 0 {
		if !jobs.ValidToken(pos[0]) {
			return e.errorf("invalid session id %q", pos[0])
		}
		key = jobs.SessionKey(tenant, pos[0])
	}

	switch sub {
	case "list":
		list, err := store.List(cctx)
		if err != nil {
			return e.errorf("%v", err)
		}
		tw := tabwriter.NewWriter(e.stdout, 1, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "SESSION\tREVISION\tSIZE\tWORKER\tLAST USED\tEXPIRES")
		for _, s := range list {
			id, mine := strings.CutPrefix(s.ID, tenant+".")
			if !mine {
				continue
			}
			fmt.Fprintf(tw, "%s\t%d\t%d\t%s\t%s\t%s\n", id, s.Revision, s.Size, s.Worker,
				s.LastUsed.Format(time.RFC3339), s.ExpiresAt().Format(time.RFC3339))
		}
		_ = tw.Flush()
	case "snapshot":
		sess, err := store.Load(cctx, key)
		if err != nil {
			return e.errorf("%v", err)
		}
		if outFile == "" {
			_, err = e.stdout.Write(sess.Data)
		} else {
			err = os.WriteFile(outFile, sess.Data, 0o600)
		}
		if err != nil {
			return e.errorf("%v", err)
		}
		fmt.Fprintf(e.stderr, "session %s: revision %d, %d bytes, last run by %s\n", pos[0], sess.Revision, len(sess.Data), sess.Worker)
	case "restore":
		if !keyed {
			// Workers restore only snapshots tagged with their key.
			return e.errorf("session restore needs the workers' snapshot key: set ERYX_SNAPSHOT_KEY or ERYX_SNAPSHOT_KEY_FILE")
		}
		data, err := os.ReadFile(pos[1])
		if err != nil {
			return e.errorf("%v", err)
		}
		// Replace whatever is there: restore is an explicit overwrite.
		var rev uint64
		if cur, err := store.Info(cctx, key); err == nil {
			rev = cur.Revision
		} else if !errors.Is(err, kvstate.ErrNotFound) {
			return e.errorf("%v", err)
		}
		newRev, err := store.Commit(cctx, key, data, rev, kvstate.CommitOptions{Worker: "eryx-submit"})
		if err != nil {
			return e.errorf("%v", err)
		}
		fmt.Fprintf(e.stdout, "session %s restored at revision %d\n", pos[0], newRev)
	case "delete":
		if err := store.Delete(cctx, key); err != nil {
			return e.errorf("%v", err)
		}
		fmt.Fprintf(e.stdout, "session %s deleted\n", pos[0])
	}
	return exitOK
}

func cmdPackage(ctx context.Context, e env, args []string) int {
	const use = "usage: eryx-submit package [--platform] upload NAME FILE | list | delete NAME"
	if len(args) == 0 {
		return e.errorf(use)
	}
	sub := args[0]
	var platform bool
	c, pos, ok := adminFlags(e, "package "+sub, args[1:], func(fs *flag.FlagSet) {
		fs.BoolVar(&platform, "platform", false, "the platform-wide package (_platform/NAME, operators only) instead of the tenant's")
	})
	want := map[string]int{"upload": 2, "list": 0, "delete": 1}
	n, known := want[sub]
	if !ok || !known || len(pos) != n {
		return e.errorf(use)
	}
	if n > 0 && !jobs.ValidName(pos[0]) {
		return e.errorf("invalid package name %q: use letters, digits, '-', '_' and '.'", pos[0])
	}
	nc, client, err := c.connect()
	if err != nil {
		return e.errorf("%v", err)
	}
	defer nc.Close()
	cctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	bucket := client.Subjects().PackagesBucket()
	owner := client.Tenant()
	if platform {
		owner = jobs.PlatformTenant
	}
	store, err := client.JetStream().ObjectStore(cctx, bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) || errors.Is(err, jetstream.ErrStreamNotFound) {
		return e.errorf("bucket %s does not exist: start a worker first", bucket)
	}
	if err != nil {
		return e.errorf("%v", err)
	}

	switch sub {
	case "upload":
		f, err := os.Open(pos[1])
		if err != nil {
			return e.errorf("%v", err)
		}
		defer func() { _ = f.Close() }()
		ext := strings.ToLower(filepath.Ext(pos[1]))
		if ext != ".whl" && ext != ".zip" && ext != ".gz" && ext != ".tgz" {
			fmt.Fprintf(e.stderr, "eryx-submit: warning: %s is not a .whl, .zip or .tar.gz; workers will reject it if it is not one of those\n", pos[1])
		}
		info, err := store.Put(cctx, jetstream.ObjectMeta{
			Name:        jobs.PackageObject(owner, pos[0]),
			Description: "uploaded from " + filepath.Base(pos[1]),
		}, f)
		if err != nil {
			return e.errorf("uploading: %v", err)
		}
		sum, _ := base64.URLEncoding.DecodeString(strings.TrimPrefix(info.Digest, "SHA-256="))
		fmt.Fprintf(e.stdout, "package %s uploaded: %d bytes; pin it as %s@sha256:%x\n", info.Name, info.Size, pos[0], sum)
	case "list":
		list, err := store.List(cctx)
		if err != nil && !errors.Is(err, jetstream.ErrNoObjectsFound) {
			return e.errorf("%v", err)
		}
		tw := tabwriter.NewWriter(e.stdout, 1, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "NAME\tSIZE\tMODIFIED\tDESCRIPTION")
		for _, o := range list {
			if !strings.HasPrefix(o.Name, owner+"/") {
				continue
			}
			fmt.Fprintf(tw, "%s\t%d\t%s\t%s\n", o.Name, o.Size, o.ModTime.Format(time.RFC3339), o.Description)
		}
		_ = tw.Flush()
	case "delete":
		if err := store.Delete(cctx, jobs.PackageObject(owner, pos[0])); err != nil {
			return e.errorf("%v", err)
		}
		fmt.Fprintf(e.stdout, "package %s deleted\n", jobs.PackageObject(owner, pos[0]))
	}
	return exitOK
}

// formatTrace renders a trace event as one line for humans.
func formatTrace(ev jobs.TraceEvent) string {
	var t struct {
		Kind       string          `json:"kind"`
		Line       int             `json:"line"`
		Function   string          `json:"function"`
		Callback   string          `json:"callback"`
		Args       json.RawMessage `json:"args"`
		DurationMs float64         `json:"duration_ms"`
		Error      *struct {
			Type    string `json:"type"`
			Message string `json:"message"`
		} `json:"error"`
	}
	if json.Unmarshal(ev.Event, &t) != nil {
		return "[trace] " + string(ev.Event)
	}
	switch t.Kind {
	case "callback_start":
		return fmt.Sprintf("[trace] line %d: callback %s(%s)", t.Line, t.Callback, t.Args)
	case "callback_end":
		if t.Error != nil {
			return fmt.Sprintf("[trace] callback %s failed after %.1fms: %s: %s", t.Callback, t.DurationMs, t.Error.Type, t.Error.Message)
		}
		return fmt.Sprintf("[trace] callback %s returned after %.1fms", t.Callback, t.DurationMs)
	case "exception":
		if t.Error != nil {
			return fmt.Sprintf("[trace] line %d in %s: exception %s: %s", t.Line, t.Function, t.Error.Type, t.Error.Message)
		}
	}
	return fmt.Sprintf("[trace] %-6s line %d in %s", t.Kind, t.Line, t.Function)
}
