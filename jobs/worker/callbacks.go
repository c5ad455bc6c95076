package worker

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/eryx-dev/eryx/jobs"
	"github.com/eryx-dev/eryx/runtime/sandbox"
)

// DefaultCallbackInstallMax is how many callbacks a job gets as Python
// globals by default. Installing one costs the guest a spec to decode and
// a function object, on every job, so a large catalogue is not installed
// whole into jobs that may never call it; the rest are reachable with
// invoke(name, **kwargs).
const DefaultCallbackInstallMax = 64

// jobCallbacks is the catalogue as one job sees it: narrowed to the job's
// allow-list (if any), and with at most limit callbacks listed, so that
// at most limit are installed in the sandbox.
type jobCallbacks struct {
	inner sandbox.Callbacks
	allow map[string]bool // nil: every callback of the catalogue
	limit int
	// onTruncate is told when the listing was cut to limit.
	onTruncate func(total int)
}

// allowCallbacks applies a job's allow-list: nil keeps the catalogue, an
// empty list removes every callback. Either way, at most limit callbacks
// are listed (installed as globals); names beyond stay invocable.
func allowCallbacks(cat sandbox.Callbacks, names []string, limit int, onTruncate func(total int)) sandbox.Callbacks {
	switch {
	case cat == nil:
		return nil
	case names != nil && len(names) == 0:
		return nil
	}
	j := &jobCallbacks{inner: cat, limit: limit, onTruncate: onTruncate}
	if names != nil {
		j.allow = make(map[string]bool, len(names))
		for _, n := range names {
			j.allow[n] = true
		}
	}
	return j
}

func (j *jobCallbacks) List(ctx context.Context) ([]sandbox.CallbackSpec, error) {
	all, err := j.inner.List(ctx)
	if err != nil {
		return nil, err
	}
	out := all[:0:0]
	total := 0
	for _, spec := range all {
		if j.allow != nil && !j.allow[spec.Name] {
			continue
		}
		total++
		if j.limit <= 0 || len(out) < j.limit {
			out = append(out, spec)
		}
	}
	if total > len(out) && j.onTruncate != nil {
		j.onTruncate(total)
	}
	return out, nil
}

func (j *jobCallbacks) Invoke(ctx context.Context, name string, args json.RawMessage) (json.RawMessage, error) {
	if j.allow != nil && !j.allow[name] {
		// The code cannot see it, so to the code it does not exist.
		return nil, fmt.Errorf("%w: %s", sandbox.ErrUnknownCallback, name)
	}
	return j.inner.Invoke(ctx, name, args)
}

// TenantCallbacks is a catalogue that knows tenants (*catalogue.Catalogue
// is one): ForJob is the catalogue as a job of tenant sees it, with the
// callbacks of services that do not admit the tenant hidden, and every
// request carrying the tenant and job id.
type TenantCallbacks interface {
	sandbox.Callbacks
	ForJob(tenant, job string) sandbox.Callbacks
}

// callbacksFor is the catalogue as job sees it: its tenant's view,
// narrowed to its allow-list.
func (w *Worker) callbacksFor(d *delivery, job *jobs.Job) sandbox.Callbacks {
	cat := w.cfg.Callbacks
	if tc, ok := cat.(TenantCallbacks); ok {
		cat = tc.ForJob(d.tenant, d.id)
	}
	return allowCallbacks(cat, job.Callbacks, w.cfg.CallbackInstallMax, func(total int) {
		w.bound(BoundCallbackInstall)
		d.log.Debug("callbacks beyond the install limit are reachable through invoke() only",
			"offered", total, "installed", w.cfg.CallbackInstallMax)
	})
}
