// Package embednats runs a NATS server with JetStream inside the process:
// the worker's out-of-the-box mode, and the real server tests run against.
package embednats

import (
	"errors"
	"fmt"
	"net"
	"net/url"
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
	// ServerName names the server in advisories and logs (required in a
	// cluster).
	ServerName string
	// Sync is when JetStream flushes its files to disk: "always" (before
	// every acknowledgement), a duration ("1s": at least that often), or
	// "" for the server's default (every 2 minutes). See ParseSync.
	Sync string
	// Cluster, if set, makes the server a member of a JetStream cluster.
	Cluster *Cluster
}

// Cluster is a server's place in a cluster of embedded or real servers.
type Cluster struct {
	// Name of the cluster, the same on every member.
	Name string
	// Listen is host:port for routes from the other members.
	Listen string
	// Routes are the other members' route URLs (nats-route://host:port).
	Routes []string
}

// ParseSync checks a sync policy: "" (the server's default), "always",
// or a positive duration.
func ParseSync(s string) (always bool, interval time.Duration, err error) {
	switch s {
	case "":
		return false, 0, nil
	case "always":
		return true, 0, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return false, 0, fmt.Errorf("embednats: sync policy %q: want \"always\" or a positive duration", s)
	}
	return false, d, nil
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
	always, interval, err := ParseSync(opts.Sync)
	if err != nil {
		return nil, err
	}
	sopts := &server.Options{
		ServerName: opts.ServerName,
		Host:       host,
		Port:       port,
		JetStream:  true,
		StoreDir:   opts.StoreDir,
		NoSigs:     true,
		NoLog:      !opts.Logging,
		SyncAlways: always,
	}
	if interval > 0 {
		sopts.SyncInterval = interval
	}
	if c := opts.Cluster; c != nil {
		if opts.ServerName == "" {
			return nil, errors.New("embednats: a cluster member needs a ServerName")
		}
		chost, cport, err := net.SplitHostPort(c.Listen)
		if err != nil {
			return nil, fmt.Errorf("embednats: cluster listen address %q: %w", c.Listen, err)
		}
		sopts.Cluster.Name = c.Name
		sopts.Cluster.Host = chost
		if sopts.Cluster.Port, err = strconv.Atoi(cport); err != nil {
			return nil, fmt.Errorf("embednats: cluster listen port %q: %w", cport, err)
		}
		for _, r := range c.Routes {
			u, err := url.Parse(r)
			if err != nil {
				return nil, fmt.Errorf("embednats: route %q: %w", r, err)
			}
			sopts.Routes = append(sopts.Routes, u)
		}
	}
	ns, err := server.NewServer(sopts)
	if err != nil {
		return nil, fmt.Errorf("embednats: %w", err)
	}
	if opts.Logging {
		ns.ConfigureLogger()
	}
	go ns.Start()
	if !ns.ReadyForConnections(30 * time.Second) {
		ns.Shutdown()
		return nil, fmt.Errorf("embednats: server on %s not ready after 30s", opts.Listen)
	}
	return ns, nil
}
