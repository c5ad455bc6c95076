// Command eryx-auth is eryx's NATS auth-callout service: the server asks
// it about every new connection, it maps the connection's token (an API
// key issued by eryx-admin) to a tenant and role, and answers with a user
// carrying that role's permissions (docs/security.md).
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/kelseyhightower/envconfig"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"

	"github.com/eryx-dev/eryx/auth"
)

// Config is read from ERYX_* variables (docs/configuration.md).
type Config struct {
	NATSURL        string        `envconfig:"NATS_URL" default:"nats://127.0.0.1:4222" desc:"NATS server URL(s), comma-separated"`
	User           string        `envconfig:"AUTH_USER" default:"eryx-auth" desc:"the static user eryx-auth connects as (the callout's auth_users)"`
	Password       string        `envconfig:"AUTH_PASSWORD" desc:"its password"`
	IssuerSeed     string        `envconfig:"AUTH_ISSUER_SEED" desc:"account nkey seed (SA...) signing users; its public key is the server's auth_callout issuer"`
	IssuerSeedFile string        `envconfig:"AUTH_ISSUER_SEED_FILE" desc:"file holding the seed, instead of ERYX_AUTH_ISSUER_SEED"`
	Account        string        `envconfig:"AUTH_ACCOUNT" default:"ERYX" desc:"account the issued users are placed in"`
	SubjectPrefix  string        `envconfig:"SUBJECT_PREFIX" default:"eryx" desc:"first token(s) of every subject"`
	UserTTL        time.Duration `envconfig:"AUTH_USER_TTL" default:"0s" desc:"lifetime of an issued user; 0: until the client disconnects"`
	LogLevel       string        `envconfig:"LOG_LEVEL" default:"info" desc:"debug, info, warn or error"`
	HealthListen   string        `envconfig:"AUTH_HEALTH_LISTEN" desc:"host:port of /livez and /readyz (ready: connected and answering); empty: none"`
}

func main() {
	if len(os.Args) > 1 && (os.Args[1] == "--help" || os.Args[1] == "-h") {
		_ = envconfig.Usagef("ERYX", &Config{}, os.Stdout, envconfig.DefaultTableFormat)
		return
	}
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "eryx-auth:", err)
		os.Exit(1)
	}
}

func run() error {
	var cfg Config
	if err := envconfig.Process("ERYX", &cfg); err != nil {
		return err
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(cfg.LogLevel)); err != nil {
		return fmt.Errorf("ERYX_LOG_LEVEL: %w", err)
	}
	log := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	seed := cfg.IssuerSeed
	if cfg.IssuerSeedFile != "" {
		b, err := os.ReadFile(cfg.IssuerSeedFile)
		if err != nil {
			return err
		}
		seed = strings.TrimSpace(string(b))
	}
	if seed == "" {
		return errors.New("ERYX_AUTH_ISSUER_SEED or ERYX_AUTH_ISSUER_SEED_FILE is required (eryx-admin issuer makes one)")
	}
	issuer, err := nkeys.FromSeed([]byte(seed))
	if err != nil {
		return fmt.Errorf("issuer seed: %w", err)
	}
	if pub, _ := issuer.PublicKey(); !nkeys.IsValidPublicAccountKey(pub) {
		return errors.New("issuer seed: want an account seed (SA...)")
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	nc, err := nats.Connect(cfg.NATSURL, nats.UserInfo(cfg.User, cfg.Password), nats.Name("eryx-auth"),
		nats.CustomInboxPrefix(auth.InboxPrefix(cfg.SubjectPrefix, "auth", "")), nats.MaxReconnects(-1))
	if err != nil {
		return fmt.Errorf("connecting to NATS: %w", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	store, err := auth.OpenStore(ctx, js, cfg.SubjectPrefix, true)
	if err != nil {
		return err
	}
	co := &auth.Callout{Store: store, Issuer: issuer, Account: cfg.Account, Prefix: cfg.SubjectPrefix,
		UserTTL: cfg.UserTTL, Log: log}
	l, err := co.Listen(ctx, nc)
	if err != nil {
		return err
	}
	defer l.Stop()
	if cfg.HealthListen != "" {
		mux := http.NewServeMux()
		mux.HandleFunc("/livez", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok\n") })
		mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
			if !nc.IsConnected() {
				http.Error(w, "not connected to NATS", http.StatusServiceUnavailable)
				return
			}
			_, _ = io.WriteString(w, "ok\n")
		})
		srv := &http.Server{Addr: cfg.HealthListen, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		go func() {
			if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Error("eryx-auth: health server", "error", err)
			}
		}()
		defer func() { _ = srv.Close() }()
	}
	log.Info("eryx-auth: answering authorization requests", "account", cfg.Account)
	<-ctx.Done()
	return nil
}
