// Command eryx-callback-example serves example callbacks (get_time, echo,
// add, divide, kv.set/get/keys, sleep) to eryx jobs over NATS. It is both
// a usable demo and the template of a callback service written with
// package callbacks; see docs/callbacks.md.
//
//	eryx-callback-example [--nats URL] [--prefix eryx] [--name eryx-example]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	_ "time/tzdata" // get_time resolves any IANA zone, whatever the host has

	"github.com/nats-io/nats.go"

	"github.com/eryx-dev/eryx/callbacks"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "eryx-callback-example:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("eryx-callback-example", flag.ContinueOnError)
	url := fs.String("nats", envOr("NATS_URL", nats.DefaultURL), "NATS server URL (env NATS_URL)")
	prefix := fs.String("prefix", envOr("ERYX_PREFIX", callbacks.DefaultPrefix), "eryx subject prefix (env ERYX_PREFIX)")
	name := fs.String("name", "eryx-example", "micro service name")
	maxConc := fs.Int("max-concurrent", callbacks.DefaultMaxConcurrent, "handlers running at once")
	fs.Usage = func() {
		_, _ = fmt.Fprintf(fs.Output(), "Usage: eryx-callback-example [flags]\n\nServes example callbacks to eryx jobs over NATS.\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	nc, err := nats.Connect(*url, nats.Name(*name), nats.MaxReconnects(-1))
	if err != nil {
		return fmt.Errorf("connecting to %s: %w", *url, err)
	}
	defer nc.Close()

	svc := newService(*name)
	svc.Prefix = *prefix
	svc.MaxConcurrent = *maxConc
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	svc.Logger = log
	names := make([]string, len(svc.Callbacks))
	for i, d := range svc.Callbacks {
		names[i] = d.Name
	}
	log.Info("serving callbacks", "url", nc.ConnectedUrlRedacted(), "subjects", callbacks.SubjectPrefix(*prefix)+"<name>", "callbacks", names)
	if err := callbacks.Serve(ctx, nc, svc); err != nil {
		return err
	}
	log.Info("stopped")
	return nil
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}
