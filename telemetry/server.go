package telemetry

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"
)

// Paths served by NewMux.
const (
	PathLivez   = "/livez"
	PathReadyz  = "/readyz"
	PathMetrics = "/metrics"
)

// NewMux routes /livez and /readyz to h and /metrics to m. Either may be
// nil, in which case its paths answer 404.
func NewMux(h *Health, m *Metrics) *http.ServeMux {
	mux := http.NewServeMux()
	if h != nil {
		mux.Handle("GET "+PathLivez, h.LivezHandler())
		mux.Handle("GET "+PathReadyz, h.ReadyzHandler())
	}
	if m != nil {
		mux.Handle("GET "+PathMetrics, m.Handler())
	}
	return mux
}

// Server is the worker's observability HTTP server (health and metrics on
// one port, separate from anything jobs can reach).
type Server struct {
	srv *http.Server
	ln  net.Listener
}

// Listen binds addr (e.g. ":9090"; port 0 picks a free one) now, so a port
// conflict fails the worker's startup instead of surfacing later in a
// goroutine. Call Serve to start answering.
func Listen(addr string, handler http.Handler) (*Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("telemetry: listen %s: %w", addr, err)
	}
	return &Server{
		ln: ln,
		srv: &http.Server{
			Handler: handler,
			// Probes and scrapes are small; these bounds keep a slow or
			// stuck client from holding connections open.
			ReadHeaderTimeout: 5 * time.Second,
			ReadTimeout:       10 * time.Second,
			WriteTimeout:      30 * time.Second,
			IdleTimeout:       60 * time.Second,
		},
	}, nil
}

// Addr is the bound address, useful when Listen was given port 0.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Serve answers requests until Shutdown; it then returns nil.
func (s *Server) Serve() error {
	if err := s.srv.Serve(s.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("telemetry: serve: %w", err)
	}
	return nil
}

// Shutdown stops accepting connections and waits for in-flight requests
// until ctx is done. Shut it down last when draining, so probes keep being
// answered while jobs finish.
func (s *Server) Shutdown(ctx context.Context) error {
	if err := s.srv.Shutdown(ctx); err != nil {
		return fmt.Errorf("telemetry: shutdown server: %w", err)
	}
	return nil
}
