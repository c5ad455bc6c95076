// Command eryx-submit runs Python code on eryx workers through NATS and
// streams its output; it also cancels jobs, lists callbacks, manages
// sessions and uploads packages. See docs/cli.md.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/eryx-dev/eryx/auth"
	"github.com/eryx-dev/eryx/jobs"
	"github.com/eryx-dev/eryx/telemetry"
)

// Exit codes (docs/cli.md).
const (
	exitOK        = 0
	exitError     = 1   // the code raised, exited non-zero, or crashed
	exitUsage     = 2   // bad usage, infrastructure failure, or a rejected job
	exitTimeout   = 124 // like timeout(1)
	exitCancelled = 130 // like a shell's Ctrl-C
	exitFuel      = 125 // fuel exhausted: next to timeout's 124
)

// cancelGrace is how long Ctrl-C waits for the job's cancelled result.
const cancelGrace = 5 * time.Second

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	go func() {
		// After the first signal a second one kills the process outright.
		<-ctx.Done()
		stop()
	}()
	os.Exit(run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

// env is the process environment, separate for tests.
type env struct {
	stdin          io.Reader
	stdout, stderr io.Writer
}

func (e env) errorf(format string, args ...any) int {
	fmt.Fprintf(e.stderr, "eryx-submit: "+format+"\n", args...)
	return exitUsage
}

// run is the whole program. ctx ending (Ctrl-C) cancels a running job.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	e := env{stdin: stdin, stdout: stdout, stderr: stderr}
	args = commonFirst(args)
	if len(args) > 0 {
		switch args[0] {
		case "cancel":
			return cmdCancel(ctx, e, args[1:])
		case "attach":
			return cmdAttach(ctx, e, args[1:])
		case "callbacks":
			return cmdCallbacks(ctx, e, args[1:])
		case "session":
			return cmdSession(ctx, e, args[1:])
		case "package":
			return cmdPackage(ctx, e, args[1:])
		case "files":
			return cmdFiles(ctx, e, args[1:])
		case "help":
			usage(stdout)
			return exitOK
		}
	}
	return cmdRun(ctx, e, args)
}

var subcommands = map[string]bool{"cancel": true, "attach": true, "callbacks": true, "session": true, "package": true, "files": true, "help": true}

// commonFirst moves the common flags given before a subcommand
// ("eryx-submit --nats URL session list") after it, where its flag set
// parses them; anything else is returned as it is (a run: "--nats URL
// job.py", or "-- session" naming a file).
func commonFirst(args []string) []string {
	fs := flag.NewFlagSet("", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	var c common
	c.register(fs)
	if fs.Parse(args) != nil || fs.NArg() == 0 || fs.NArg() == len(args) {
		return args
	}
	rest := fs.Args()
	flags := args[:len(args)-len(rest)]
	if flags[len(flags)-1] == "--" || !subcommands[rest[0]] {
		return args
	}
	out := append([]string{rest[0]}, rest[1:]...)
	// Before a "--" of the subcommand's, so that they stay flags.
	at := len(out)
	for i, a := range out {
		if a == "--" {
			at = i
			break
		}
	}
	return append(out[:at:at], append(append([]string(nil), flags...), out[at:]...)...)
}

func usage(w io.Writer) {
	fmt.Fprint(w, `Usage:
  eryx-submit [flags] FILE        run a Python file
  eryx-submit [flags] -c CODE     run code given inline
  eryx-submit [flags] -           run code read from stdin
  eryx-submit attach ID           follow a submitted job (replays its output)
  eryx-submit cancel ID           cancel a queued or running job
  eryx-submit callbacks           list the callbacks workers can offer
  eryx-submit session list|snapshot|restore|delete ...
  eryx-submit package upload NAME FILE | list | delete NAME
  eryx-submit files put LOCAL [NAME] | get NAME [LOCAL] | ls [PREFIX] | rm NAME...

Exit status: 0 ok, 1 Python error, 124 timeout, 125 fuel exhausted, 130 cancelled,
2 usage or infrastructure error (including a rejected job).

Run flags:
`)
	fs, _ := runFlags(io.Discard)
	fs.SetOutput(w)
	fs.PrintDefaults()
}

// common are the flags of every command.
type common struct {
	natsURL string
	creds   string
	prefix  string
	tenant  string
}

func (c *common) register(fs *flag.FlagSet) {
	fs.StringVar(&c.natsURL, "nats", envOr("NATS_URL", nats.DefaultURL), "NATS server URL ($NATS_URL)")
	fs.StringVar(&c.creds, "creds", os.Getenv("NATS_CREDS"), "NATS credentials file ($NATS_CREDS)")
	fs.StringVar(&c.prefix, "prefix", envOr("ERYX_SUBJECT_PREFIX", jobs.DefaultPrefix), "subject prefix ($ERYX_SUBJECT_PREFIX)")
	fs.StringVar(&c.tenant, "tenant", envOr("ERYX_TENANT", jobs.DefaultTenant), "tenant to act for ($ERYX_TENANT); NATS permissions decide which you may")
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// connect opens the NATS connection and the client.
func (c *common) connect(opts ...jobs.ClientOption) (*nats.Conn, *jobs.Client, error) {
	subjects, err := jobs.NewSubjects(c.prefix)
	if err != nil {
		return nil, nil, err
	}
	nopts := append([]nats.Option{nats.Name("eryx-submit"), nats.Timeout(5 * time.Second)},
		auth.ConnectOptions(subjects.Prefix, auth.RoleSubmitter, c.tenant)...)
	if c.creds != "" {
		nopts = append(nopts, nats.UserCredentials(c.creds))
	}
	nc, err := nats.Connect(c.natsURL, nopts...)
	if err != nil {
		return nil, nil, fmt.Errorf("connecting to NATS at %s: %w", c.natsURL, err)
	}
	client, err := jobs.NewClient(nc, subjects, append([]jobs.ClientOption{jobs.WithTenant(c.tenant)}, opts...)...)
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	return nc, client, nil
}

// multi is a repeatable string flag.
type multi []string

func (m *multi) String() string     { return strings.Join(*m, ",") }
func (m *multi) Set(v string) error { *m = append(*m, v); return nil }

type runOptions struct {
	common
	code      string
	codeSet   bool // -c was given, maybe empty: empty code is a valid job
	id        string
	session   string
	queue     string
	timeout   time.Duration
	memoryMB  int64
	fuel      uint64
	trace     bool
	jsonOut   bool
	packages  multi
	callbacks multi
	noCallbks bool
	network   string
	noNetwork bool
	files     multi  // --file LOCAL[:PATH]
	outDir    string // --out DIR
}

func runFlags(out io.Writer) (*flag.FlagSet, *runOptions) {
	o := &runOptions{}
	fs := flag.NewFlagSet("eryx-submit", flag.ContinueOnError)
	fs.SetOutput(out)
	o.register(fs)
	fs.StringVar(&o.code, "c", "", "code to run (instead of FILE)")
	fs.StringVar(&o.id, "id", "", "job id (default: a new UUID); the same id runs once")
	fs.StringVar(&o.session, "session", "", "run in this session, keeping state between jobs")
	fs.StringVar(&o.queue, "queue", jobs.DefaultQueue, "queue to submit to")
	fs.DurationVar(&o.timeout, "timeout", 0, "run time limit, e.g. 10s (default and maximum: the worker's)")
	fs.Int64Var(&o.memoryMB, "memory", 0, "memory limit in MiB (default and maximum: the worker's)")
	fs.Uint64Var(&o.fuel, "fuel", 0, "compute budget in fuel units (default: the worker's; see docs/runtime.md)")
	fs.BoolVar(&o.trace, "trace", false, "print line-level trace events to stderr")
	fs.BoolVar(&o.jsonOut, "json", false, "print the result document as JSON instead of streaming output")
	fs.Var(&o.packages, "package", "make an uploaded package importable (repeatable)")
	fs.Var(&o.callbacks, "callback", "allow only this callback (repeatable; default: all)")
	fs.BoolVar(&o.noCallbks, "no-callbacks", false, "allow no callbacks at all")
	fs.StringVar(&o.network, "network", "", `network request narrowing the worker's policy, e.g. '{"allow":["api.example.com"]}'`)
	fs.BoolVar(&o.noNetwork, "no-network", false, "no network access at all")
	o.registerFileFlags(fs)
	return fs, o
}

// parseInterspersed parses flags wherever they are among the positional
// arguments ("eryx-submit job.py --json"), which package flag does not.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return pos, nil
		}
		if len(args) > len(rest) && args[len(args)-len(rest)-1] == "--" {
			return append(pos, rest...), nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

func cmdRun(ctx context.Context, e env, args []string) int {
	fs, o := runFlags(e.stderr)
	pos, err := parseInterspersed(fs, args)
	if errors.Is(err, flag.ErrHelp) {
		usage(e.stdout)
		return exitOK
	}
	if err != nil {
		return exitUsage
	}
	fs.Visit(func(f *flag.Flag) { o.codeSet = o.codeSet || f.Name == "c" })
	code, err := o.source(e, pos)
	if err != nil {
		return e.errorf("%v (see eryx-submit help)", err)
	}
	job := &jobs.Job{
		ID: o.id, Code: code, Session: o.session, Trace: o.trace,
		TimeoutMS: o.timeout.Milliseconds(), MemoryMB: o.memoryMB, Fuel: o.fuel,
		Packages: o.packages,
	}
	if o.timeout > 0 && job.TimeoutMS == 0 {
		job.TimeoutMS = 1 // sub-millisecond: the least there is
	}
	switch {
	case o.noCallbks:
		job.Callbacks = []string{}
	case len(o.callbacks) > 0:
		job.Callbacks = o.callbacks
	}
	switch {
	case o.noNetwork:
		job.Network = json.RawMessage(`{"allow":[]}`)
	case o.network != "":
		if !json.Valid([]byte(o.network)) {
			return e.errorf("--network is not valid JSON")
		}
		job.Network = json.RawMessage(o.network)
	}

	// Tracing is configured by the OTEL_* variables and off without them;
	// the job's trace then starts here and continues in the worker.
	tel, err := telemetry.Setup(ctx, telemetry.Options{ServiceName: "eryx-submit"})
	if err != nil {
		return e.errorf("%v", err)
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = tel.Shutdown(sctx)
	}()
	nc, client, err := o.connect(jobs.WithPublishHook(func(ctx context.Context, msg *nats.Msg, id string) func(error) {
		_, span := tel.StartPublish(ctx, msg, id)
		return func(err error) { telemetry.EndSpan(span, err) }
	}))
	if err != nil {
		return e.errorf("%v", err)
	}
	defer nc.Close()
	if job.Files, err = uploadInputs(ctx, client, o.files); err != nil {
		return e.errorf("%v", err)
	}
	res, err := follow(ctx, e, client, job, o.queue, o.jsonOut, true)
	if err != nil {
		return e.errorf("%v", err)
	}
	exit := report(e, res, o.jsonOut)
	if o.outDir == "" && len(res.Files) > 0 && !o.jsonOut {
		fmt.Fprintf(e.stderr, "eryx-submit: %d output file(s), e.g. %s/%s: fetch with --out DIR or 'files get'\n",
			len(res.Files), res.ID, res.Files[0].Path)
	}
	if o.outDir != "" {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Minute)
		defer cancel()
		if err := downloadOutputs(dctx, e, client, res, o.outDir); err != nil {
			fmt.Fprintf(e.stderr, "eryx-submit: downloading outputs: %v\n", err)
			if exit == exitOK {
				exit = exitUsage
			}
		}
	}
	return exit
}

// source returns the code from -c, FILE or stdin.
func (o *runOptions) source(e env, pos []string) (string, error) {
	switch {
	case o.codeSet && len(pos) > 0:
		return "", errors.New("give either -c CODE or a FILE, not both")
	case o.codeSet:
		return o.code, nil
	case len(pos) != 1:
		return "", errors.New("nothing to run: give a FILE, -c CODE, or - for stdin")
	case pos[0] == "-":
		b, err := io.ReadAll(e.stdin)
		return string(b), err
	default:
		b, err := os.ReadFile(pos[0])
		return string(b), err
	}
}

// follow submits job (unless submit is false: attach) and streams its
// events until its result. The first end of ctx (Ctrl-C) cancels the job
// and waits up to cancelGrace for the cancelled result.
func follow(ctx context.Context, e env, client *jobs.Client, job *jobs.Job, queue string, quiet, submit bool) (*jobs.Result, error) {
	// Waiting outlives ctx: a Ctrl-C still wants to see the result.
	waitCtx, stopWait := context.WithCancel(context.WithoutCancel(ctx))
	defer stopWait()
	if job.ID == "" {
		job.ID = newID()
	}
	watch, err := client.Watch(waitCtx, job.ID)
	if err != nil {
		return nil, err
	}
	defer watch.Stop()
	if submit {
		sub, err := client.Submit(waitCtx, queue, job)
		if err != nil {
			return nil, err
		}
		if sub.Duplicate && !quiet {
			fmt.Fprintf(e.stderr, "eryx-submit: job %s was submitted before; replaying its result\n", job.ID)
		}
	}

	h := jobs.Handlers{
		Attempt: func(attempt int, worker string) {
			fmt.Fprintf(e.stderr, "\neryx-submit: the job's worker was lost; restarted on %s (attempt %d)\n", worker, attempt)
		},
	}
	if !quiet {
		h.Output = func(kind jobs.EventKind, data []byte) {
			if kind == jobs.EventStderr {
				_, _ = e.stderr.Write(data)
			} else {
				_, _ = e.stdout.Write(data)
			}
		}
	}
	if job.Trace {
		h.Trace = func(ev jobs.TraceEvent) { fmt.Fprintln(e.stderr, formatTrace(ev)) }
	}

	type outcome struct {
		res *jobs.Result
		err error
	}
	done := make(chan outcome, 1)
	go func() {
		res, err := watch.Wait(waitCtx, h)
		done <- outcome{res, err}
	}()
	select {
	case o := <-done:
		return o.res, o.err
	case <-ctx.Done():
	}
	fmt.Fprintf(e.stderr, "\neryx-submit: cancelling job %s...\n", job.ID)
	cctx, cancel := context.WithTimeout(waitCtx, cancelGrace)
	defer cancel()
	if err := client.Cancel(cctx, job.ID, "interrupted by eryx-submit"); err != nil {
		return nil, err
	}
	select {
	case o := <-done:
		return o.res, o.err
	case <-cctx.Done():
		// Probably queued behind other jobs: it will be skipped when a
		// worker reaches it.
		fmt.Fprintf(e.stderr, "eryx-submit: no answer yet; job %s stays cancelled and will not run\n", job.ID)
		return &jobs.Result{ID: job.ID, Status: jobs.StatusCancelled}, nil
	}
}

// report prints the end of a job and returns the exit code.
func report(e env, res *jobs.Result, jsonOut bool) int {
	if jsonOut {
		printJSON(e.stdout, res)
		return exitCode(res.Status)
	}
	switch res.Status {
	case jobs.StatusError:
		if res.Error != nil {
			if res.Error.Traceback != "" {
				fmt.Fprint(e.stderr, ensureNewline(res.Error.Traceback))
			} else {
				fmt.Fprintf(e.stderr, "%s: %s\n", res.Error.Type, res.Error.Message)
			}
		}
		if res.SessionError != "" && (res.Error == nil || res.Error.Type != "eryx.SessionError") {
			fmt.Fprintf(e.stderr, "eryx-submit: session not saved: %s\n", res.SessionError)
		}
	case jobs.StatusTimeout:
		fmt.Fprintf(e.stderr, "eryx-submit: job %s timed out\n", res.ID)
	case jobs.StatusFuelExhausted:
		fmt.Fprintf(e.stderr, "eryx-submit: job %s ran out of fuel after %d units\n", res.ID, res.FuelConsumed)
	case jobs.StatusCancelled:
		fmt.Fprintf(e.stderr, "eryx-submit: job %s cancelled\n", res.ID)
	case jobs.StatusRejected:
		fmt.Fprintf(e.stderr, "eryx-submit: job %s rejected (%s): %s\n", res.ID, res.Code, res.Reason)
	}
	if res.OutputTruncated {
		fmt.Fprintln(e.stderr, "eryx-submit: output truncated at the worker's output limit")
	}
	if res.ResultError != "" {
		fmt.Fprintf(e.stderr, "eryx-submit: result: %s\n", res.ResultError)
	}
	return exitCode(res.Status)
}

func exitCode(s jobs.Status) int {
	switch s {
	case jobs.StatusOK:
		return exitOK
	case jobs.StatusError:
		return exitError
	case jobs.StatusTimeout:
		return exitTimeout
	case jobs.StatusFuelExhausted:
		return exitFuel
	case jobs.StatusCancelled:
		return exitCancelled
	default:
		return exitUsage
	}
}

func ensureNewline(s string) string {
	if strings.HasSuffix(s, "\n") {
		return s
	}
	return s + "\n"
}

func cmdCancel(ctx context.Context, e env, args []string) int {
	var c common
	fs := flag.NewFlagSet("eryx-submit cancel", flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	c.register(fs)
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return exitUsage
	}
	if len(pos) != 1 {
		return e.errorf("usage: eryx-submit cancel ID")
	}
	nc, client, err := c.connect()
	if err != nil {
		return e.errorf("%v", err)
	}
	defer nc.Close()
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := client.Cancel(cctx, pos[0], "eryx-submit cancel"); err != nil {
		return e.errorf("%v", err)
	}
	fmt.Fprintf(e.stdout, "cancel requested for job %s\n", pos[0])
	return exitOK
}

func cmdAttach(ctx context.Context, e env, args []string) int {
	var c common
	var jsonOut bool
	fs := flag.NewFlagSet("eryx-submit attach", flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	c.register(fs)
	fs.BoolVar(&jsonOut, "json", false, "print the result document as JSON")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return exitUsage
	}
	if len(pos) != 1 {
		return e.errorf("usage: eryx-submit attach ID")
	}
	nc, client, err := c.connect()
	if err != nil {
		return e.errorf("%v", err)
	}
	defer nc.Close()
	res, err := follow(ctx, e, client, &jobs.Job{ID: pos[0]}, "", jsonOut, false)
	if err != nil {
		return e.errorf("%v", err)
	}
	return report(e, res, jsonOut)
}
