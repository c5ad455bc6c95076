package worker

import (
	"bytes"
	"slices"

	"github.com/eryx-dev/eryx/jobs"
	"github.com/eryx-dev/eryx/netgate"
)

// networkRequest parses a job's network request and checks that it asks
// for no more than the worker's policy: a request for more is rejected
// (not_allowed) rather than silently narrowed, so the user learns at once
// why a host is unreachable.
func (w *Worker) networkRequest(job *jobs.Job) (netgate.Request, error) {
	raw := bytes.TrimSpace(job.Network)
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		return netgate.Request{}, nil // the worker's policy as it is
	}
	req, err := netgate.ParseRequest(raw)
	if err != nil {
		return netgate.Request{}, reject(jobs.CodeMalformed, "%v", err)
	}
	var ceiling netgate.Policy
	if w.cfg.Network != nil {
		ceiling = w.cfg.Network.Policy()
	}
	for _, entry := range req.Allow {
		if !ceiling.Enabled() || !ceiling.Covers(entry) {
			return netgate.Request{}, reject(jobs.CodeNotAllowed, "network access to %q is beyond this worker's policy", entry)
		}
	}
	for _, port := range req.AllowPorts {
		if !slices.Contains(ceiling.AllowPorts, port) {
			return netgate.Request{}, reject(jobs.CodeNotAllowed, "port %d is beyond this worker's policy", port)
		}
	}
	return req, nil
}
