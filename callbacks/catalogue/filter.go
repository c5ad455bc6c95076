package catalogue

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/nats-io/nats.go"

	"github.com/eryx-dev/eryx/callbacks"
	"github.com/eryx-dev/eryx/runtime/sandbox"
)

// Filter returns the callbacks of the catalogue that allow admits: a job's
// allow-list. Entries are exact names, "ns.*" for every callback under
// namespace ns (at any depth), or "*" for all. A nil allow admits
// everything (no restriction was asked for); an empty, non-nil one admits
// nothing — JSON `"callbacks": []` decodes to the latter.
//
// Names outside the list are reported as unknown, exactly like names that
// do not exist, so a job cannot probe what it was not given.
func (c *Catalogue) Filter(allow []string) sandbox.Callbacks {
	if allow == nil {
		return c
	}
	return &filtered{c: c, allow: NewAllowList(allow)}
}

// AllowList matches callback names against a job's allow-list (see
// Filter). The zero value admits nothing.
type AllowList struct {
	all      bool
	exact    map[string]bool
	prefixes []string
}

// NewAllowList compiles patterns.
func NewAllowList(patterns []string) AllowList {
	a := AllowList{exact: map[string]bool{}}
	for _, p := range patterns {
		switch {
		case p == "*":
			a.all = true
		case strings.HasSuffix(p, ".*"):
			a.prefixes = append(a.prefixes, strings.TrimSuffix(p, "*"))
		default:
			a.exact[p] = true
		}
	}
	return a
}

// Allows reports whether name is admitted.
func (a AllowList) Allows(name string) bool {
	if a.all || a.exact[name] {
		return true
	}
	for _, p := range a.prefixes {
		if strings.HasPrefix(name, p) {
			return true
		}
	}
	return false
}

type filtered struct {
	c     *Catalogue
	allow AllowList
}

func (f *filtered) List(ctx context.Context) ([]sandbox.CallbackSpec, error) {
	all, err := f.c.List(ctx)
	if err != nil {
		return nil, err
	}
	out := all[:0]
	for _, s := range all {
		if f.allow.Allows(s.Name) {
			out = append(out, s)
		}
	}
	return out, nil
}

func (f *filtered) Invoke(ctx context.Context, name string, args json.RawMessage) (json.RawMessage, error) {
	if !f.allow.Allows(name) {
		return nil, fmt.Errorf("%w %q", sandbox.ErrUnknownCallback, name)
	}
	return f.c.Invoke(ctx, name, args)
}

// AllowServices returns an Options.AllowService that admits the services
// named in patterns: exact names, or "prefix*" for every name starting
// with prefix. No patterns admit every service (nil is returned).
func AllowServices(patterns []string) func(service, name string) bool {
	if len(patterns) == 0 {
		return nil
	}
	exact := map[string]bool{}
	var prefixes []string
	for _, p := range patterns {
		if pre, ok := strings.CutSuffix(p, "*"); ok {
			prefixes = append(prefixes, pre)
		} else {
			exact[p] = true
		}
	}
	return func(service, _ string) bool {
		if exact[service] {
			return true
		}
		for _, p := range prefixes {
			if strings.HasPrefix(service, p) {
				return true
			}
		}
		return false
	}
}

// ForJob returns the catalogue as a job of tenant sees it: callbacks whose
// service does not admit the tenant (eryx.tenants) are hidden from List
// and unknown to Invoke, and every request carries the Eryx-Tenant and
// Eryx-Job headers, set here over anything else.
func (c *Catalogue) ForJob(tenant, job string) sandbox.Callbacks {
	return &jobView{c: c, tenant: tenant, headers: nats.Header{
		callbacks.HeaderTenant: {tenant},
		callbacks.HeaderJob:    {job},
	}}
}

type jobView struct {
	c       *Catalogue
	tenant  string
	headers nats.Header
}

func (v *jobView) List(ctx context.Context) ([]sandbox.CallbackSpec, error) {
	if err := v.c.ensureLoaded(ctx); err != nil {
		return nil, err
	}
	v.c.mu.Lock()
	defer v.c.mu.Unlock()
	out := make([]sandbox.CallbackSpec, 0, len(v.c.specs))
	for _, s := range v.c.specs {
		if e := v.c.entries[s.Name]; e != nil && e.AllowsTenant(v.tenant) {
			out = append(out, s)
		}
	}
	return out, nil
}

func (v *jobView) Invoke(ctx context.Context, name string, args json.RawMessage) (json.RawMessage, error) {
	return v.c.invoke(ctx, name, args, v.tenant, v.headers)
}
