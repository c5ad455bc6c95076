// Package embednats runs a NATS server with JetStream inside the process:
// the worker's out-of-the-box mode, and the real server tests run against.
package embednats

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// Options configure an embedded server.
type Options struct {
	// Listen is host:port; port 0 or -1 picks a free one.
	Listen string
	// StoreDir keeps JetStream's data. Required.
	StoreDir string
	// Logging turns the server's own log on (to stderr).
	Logging bool
	// ServerName names the server in advisories and logs.
	ServerName string
}

// Start starts a server and waits until it accepts connections.
func Start(opts Options) (*server.Server, error) {
	if opts.StoreDir == "" {
		return nil, errors.New("embednats: StoreDir is required")
	}
	host, portStr, err := net.SplitHostPort(opts.Listen)
	if err != nil {
		return nil, fmt.Errorf("embednats: listen address %q: %w", opts.Listen, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return nil, fmt.Errorf("embednats: listen port %q: %w", portStr, err)
	}
	if port == 0 {
		port = server.RANDOM_PORT
	}
	sopts := &server.Options{
		ServerName: opts.ServerName,
		Host:       host,
		Port:       port,
		JetStream:  true,
		StoreDir:   opts.StoreDir,
		NoSigs:     true,
		NoLog:      !opts.Logging,
	}
	ns, err := server.NewServer(sopts)
	if err != nil {
		return nil, fmt.Errorf("embednats: %w", err)
	}
	if opts.Logging {
		ns.ConfigureLogger()
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		ns.Shutdown()
		return nil, fmt.Errorf("embednats: server on %s not ready after 10s", opts.Listen)
	}
	return ns, nil
}
