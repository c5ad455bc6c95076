// Command eryx-mcp connects eryx to the Model Context Protocol.
//
//	eryx-mcp serve [--http ADDR] [--bridge FILE]   an MCP server whose run_python tool runs on eryx
//	eryx-mcp bridge --config FILE                  MCP servers' tools as eryx callbacks mcp.<server>.<tool>
//
// docs/mcp.md describes both.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/eryx-dev/eryx/auth"
	"github.com/eryx-dev/eryx/callbacks/catalogue"
	"github.com/eryx-dev/eryx/internal/solo"
	"github.com/eryx-dev/eryx/jobs"
	"github.com/eryx-dev/eryx/kvstate"
	"github.com/eryx-dev/eryx/mcp"
)

const usageText = `eryx-mcp connects eryx to the Model Context Protocol (MCP).

Usage:
  eryx-mcp serve  [flags]   serve run_python, list_callbacks and session tools (stdio, or --http)
  eryx-mcp bridge [flags]   serve the tools of MCP servers as eryx callbacks mcp.<server>.<tool>

Run "eryx-mcp serve --help" or "eryx-mcp bridge --help" for the flags; see docs/mcp.md.
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usageText)
		return 2
	}
	switch args[0] {
	case "serve":
		return cmdServe(ctx, args[1:], stdout, stderr)
	case "bridge":
		return cmdBridge(ctx, args[1:], stderr)
	case "-h", "--help", "help":
		fmt.Fprint(stdout, usageText)
		return 0
	}
	_ = stdin
	fmt.Fprintf(stderr, "eryx-mcp: unknown command %q\n\n%s", args[0], usageText)
	return 2
}

// natsFlags are the connection flags both commands share.
type natsFlags struct {
	url, creds, prefix, tenant, logLevel string
}

func (n *natsFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&n.url, "nats", os.Getenv("ERYX_NATS_URL"), "NATS URL of the eryx deployment (env ERYX_NATS_URL)")
	fs.StringVar(&n.creds, "creds", os.Getenv("ERYX_NATS_CREDS"), "NATS credentials file (env ERYX_NATS_CREDS)")
	fs.StringVar(&n.prefix, "prefix", envOr("ERYX_SUBJECT_PREFIX", jobs.DefaultPrefix), "subject prefix (env ERYX_SUBJECT_PREFIX)")
	fs.StringVar(&n.tenant, "tenant", envOr("ERYX_TENANT", jobs.DefaultTenant), "tenant the jobs run as (env ERYX_TENANT)")
	fs.StringVar(&n.logLevel, "log-level", "info", "debug, info, warn or error (logs go to stderr)")
}

func (n *natsFlags) connect(url, name string, extra ...nats.Option) (*nats.Conn, error) {
	opts := append([]nats.Option{nats.Name(name), nats.MaxReconnects(-1), nats.ReconnectWait(time.Second)}, extra...)
	if n.creds != "" {
		opts = append(opts, nats.UserCredentials(n.creds))
	}
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		return nil, fmt.Errorf("connecting to NATS at %s: %w", url, err)
	}
	return nc, nil
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

func newLogger(w io.Writer, level string) *slog.Logger {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		l = slog.LevelInfo
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: l}))
}

func cmdServe(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("eryx-mcp serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		nf                      natsFlags
		httpAddr, token, bridge string
		queue, dataDir          string
		timeout                 time.Duration
		maxCode, maxInFlight    int
		concurrency             int
		allowRemoteWithoutToken bool
	)
	nf.register(fs)
	fs.StringVar(&httpAddr, "http", "", "serve streamable HTTP on ADDR (host:port; a bare :port binds to 127.0.0.1) instead of stdio")
	fs.StringVar(&token, "token", os.Getenv("ERYX_MCP_TOKEN"), "bearer token every HTTP request must carry (env ERYX_MCP_TOKEN)")
	fs.BoolVar(&allowRemoteWithoutToken, "insecure-no-token", false, "allow --http on a non-loopback address without --token")
	fs.StringVar(&bridge, "bridge", "", "also run the bridge with this config file (its tools become callbacks of run_python code)")
	fs.StringVar(&queue, "queue", jobs.DefaultQueue, "queue the jobs go to")
	fs.StringVar(&dataDir, "data-dir", "", "without --nats: keep the embedded server's data (sessions) here (default: a temporary directory)")
	fs.DurationVar(&timeout, "timeout", 0, "without --nats: run time limit of a job (default 30s)")
	fs.IntVar(&concurrency, "concurrency", 2, "without --nats: jobs run at once")
	fs.IntVar(&maxCode, "max-code-bytes", mcp.DefaultMaxCodeBytes, "largest code accepted")
	fs.IntVar(&maxInFlight, "max-in-flight", mcp.DefaultMaxInFlight, "run_python calls running at once; more are refused")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() != 0 {
		fmt.Fprintf(stderr, "eryx-mcp serve: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	log := newLogger(stderr, nf.logLevel)

	var listener net.Listener
	if httpAddr != "" {
		addr, loopback, err := listenAddr(httpAddr)
		if err != nil {
			fmt.Fprintln(stderr, "eryx-mcp serve:", err)
			return 2
		}
		if !loopback && token == "" && !allowRemoteWithoutToken {
			fmt.Fprintf(stderr, "eryx-mcp serve: --http %s is not a loopback address: set --token (or ERYX_MCP_TOKEN)\n", httpAddr)
			return 2
		}
		if listener, err = net.Listen("tcp", addr); err != nil {
			fmt.Fprintln(stderr, "eryx-mcp serve:", err)
			return 1
		}
		defer func() { _ = listener.Close() }()
	}
	var bridgeCfg *mcp.BridgeConfig
	if bridge != "" {
		var err error
		if bridgeCfg, err = mcp.LoadBridgeConfig(bridge); err != nil {
			fmt.Fprintln(stderr, "eryx-mcp serve:", err)
			return 2
		}
	}

	url := nf.url
	if url == "" {
		s, err := solo.Start(ctx, solo.Options{DataDir: dataDir, Prefix: nf.prefix, Queue: queue, Timeout: timeout,
			Concurrency: concurrency, Logger: log})
		if err != nil {
			log.Error("starting the embedded eryx", "err", err)
			return 1
		}
		defer func() { _ = s.Close() }()
		url = s.URL()
		log.Info("embedded eryx started (NATS server and worker in this process)", "nats", url)
	}
	if err := jobs.ValidTenant(nf.tenant); err != nil {
		fmt.Fprintln(stderr, "eryx-mcp serve:", err)
		return 2
	}
	// A submitter of its tenant: replies come under the tenant's inbox
	// prefix, the only one its permissions let it read (docs/security.md).
	nc, err := nf.connect(url, "eryx-mcp serve", auth.ConnectOptions(nf.prefix, auth.RoleSubmitter, nf.tenant)...)
	if err != nil {
		log.Error("NATS", "err", err)
		return 1
	}
	defer nc.Close()
	subjects, err := jobs.NewSubjects(nf.prefix)
	if err != nil {
		fmt.Fprintln(stderr, "eryx-mcp serve:", err)
		return 2
	}
	client, err := jobs.NewClient(nc, subjects, jobs.WithTenant(nf.tenant))
	if err != nil {
		log.Error("jobs client", "err", err)
		return 1
	}
	// Session tools need the session store, which the workers create.
	var sessions mcp.Sessions
	if store, err := kvstate.Open(ctx, client.JetStream(), kvstate.Config{Bucket: subjects.SessionsBucket(), BlobBucket: subjects.SessionBlobsBucket()}); err == nil {
		sessions = store
	} else {
		log.Warn("session store unavailable: reset_session and delete_session are left out", "err", err)
	}
	cat := catalogue.New(ctx, nc, catalogue.Options{Prefix: nf.prefix, Logger: log})
	defer cat.Close()

	if bridgeCfg != nil {
		bctx, cancel := context.WithCancel(ctx)
		b, err := mcp.StartBridge(bctx, nc, *bridgeCfg, mcp.BridgeOptions{Prefix: nf.prefix, Logger: log, Stderr: os.Stderr})
		if err != nil {
			cancel()
			log.Error("bridge", "err", err)
			return 1
		}
		defer func() { cancel(); b.Wait() }()
	}

	srv, err := mcp.NewServer(mcp.ServerConfig{
		Client: client, Queue: queue, Catalogue: cat, Sessions: sessions,
		MaxCodeBytes: maxCode, MaxInFlight: maxInFlight, Logger: log, Version: version(),
	})
	if err != nil {
		log.Error("server", "err", err)
		return 1
	}
	if listener == nil {
		log.Info("serving MCP on stdio")
		if err := srv.RunStdio(ctx); err != nil && ctx.Err() == nil && !errors.Is(err, io.EOF) {
			log.Error("stdio", "err", err)
			return 1
		}
		return 0
	}
	hs := &http.Server{Handler: srv.HTTPHandler(token), ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = hs.Shutdown(sctx)
	}()
	fmt.Fprintf(stdout, "eryx-mcp: serving MCP on http://%s\n", listener.Addr())
	log.Info("serving MCP over streamable HTTP", "addr", listener.Addr().String(), "token", token != "")
	if err := hs.Serve(listener); err != nil && !errors.Is(err, http.ErrServerClosed) {
		log.Error("http", "err", err)
		return 1
	}
	return 0
}

// listenAddr completes addr: a missing host is loopback, never all
// interfaces.
func listenAddr(addr string) (string, bool, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", false, fmt.Errorf("--http %q: %w", addr, err)
	}
	if host == "" {
		host = "127.0.0.1"
	}
	loopback := host == "localhost"
	if ip := net.ParseIP(host); ip != nil {
		loopback = ip.IsLoopback()
	}
	return net.JoinHostPort(host, port), loopback, nil
}

func cmdBridge(ctx context.Context, args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("eryx-mcp bridge", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		nf     natsFlags
		config string
	)
	nf.register(fs)
	fs.StringVar(&config, "config", "", "bridge configuration (JSON with an \"mcpServers\" object); required")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if config == "" || fs.NArg() != 0 {
		fmt.Fprintln(stderr, "usage: eryx-mcp bridge --config FILE [--nats URL]")
		return 2
	}
	cfg, err := mcp.LoadBridgeConfig(config)
	if err != nil {
		fmt.Fprintln(stderr, "eryx-mcp bridge:", err)
		return 2
	}
	if nf.url == "" {
		fmt.Fprintln(stderr, "eryx-mcp bridge: --nats (or ERYX_NATS_URL) is required; to run everything in one process use `eryx-mcp serve --bridge FILE`")
		return 2
	}
	log := newLogger(stderr, nf.logLevel)
	nc, err := nf.connect(nf.url, "eryx-mcp bridge")
	if err != nil {
		log.Error("NATS", "err", err)
		return 1
	}
	defer nc.Close()
	b, err := mcp.StartBridge(ctx, nc, *cfg, mcp.BridgeOptions{Prefix: nf.prefix, Logger: log, Stderr: os.Stderr})
	if err != nil {
		log.Error("bridge", "err", err)
		return 1
	}
	log.Info("bridge running", "servers", len(cfg.Servers))
	b.Wait()
	return 0
}

// version is the module version when built with one.
func version() string {
	return strings.TrimSpace(envOr("ERYX_VERSION", "dev"))
}
