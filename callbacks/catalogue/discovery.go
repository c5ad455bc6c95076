package catalogue

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/eryx-dev/eryx/callbacks"
	"github.com/eryx-dev/eryx/jobs"
	"github.com/eryx-dev/eryx/runtime/sandbox"
)

// Entry is one discovered callback.
type Entry struct {
	sandbox.CallbackSpec
	// Subject is where requests go.
	Subject string `json:"subject"`
	// Service and Version identify the micro service serving it (the
	// highest version when several disagree).
	Service string `json:"service"`
	Version string `json:"version"`
	// Instances counts the service instances that announced it.
	Instances int `json:"instances"`
	// Tenants are the tenants whose jobs may call it (the service's
	// eryx.tenants metadata); nil: every tenant.
	Tenants []string `json:"tenants,omitempty"`

	// schema is the compiled Schema, nil when there is none; set once per
	// refresh, before the entry is published.
	schema *jsonschema.Schema
}

// AllowsTenant reports whether jobs of tenant may call the callback.
func (e *Entry) AllowsTenant(tenant string) bool {
	return e.Tenants == nil || slices.Contains(e.Tenants, tenant)
}

// parseTenants reads the eryx.tenants metadata: absent is nil (every
// tenant); present, the valid names listed (none valid: no tenant at all,
// an empty non-nil list).
func parseTenants(meta map[string]string) []string {
	raw, ok := meta[callbacks.MetaTenants]
	if !ok {
		return nil
	}
	out := []string{}
	for _, t := range strings.Split(raw, ",") {
		if t = strings.TrimSpace(t); jobs.ValidTenant(t) == nil && !slices.Contains(out, t) {
			out = append(out, t)
		}
	}
	return out
}

// window bounds one discovery: the wait for the first reply, the gap
// between replies after which it ends, and the whole of it.
type window struct{ first, quiet, max time.Duration }

// discover gathers $SRV.INFO replies: it waits up to first for the first
// one, then as long as replies keep coming within quiet of each other,
// never beyond max. Request-many has no natural end, so these windows are
// what bounds a refresh in time; maxReplies and maxBytes bound it in
// memory: replies above maxBytes are dropped undecoded, and past
// maxReplies the rest are ignored (the subscription's pending limits
// keep the client from buffering them meanwhile). It returns the replies
// and how many were ignored, by reason.
func discover(ctx context.Context, nc *nats.Conn, win window, maxReplies, maxBytes int) ([]micro.Info, map[string]int, error) {
	ignored := map[string]int{}
	inbox := nc.NewInbox()
	sub, err := nc.SubscribeSync(inbox)
	if err != nil {
		return nil, nil, fmt.Errorf("catalogue: discovery: %w", err)
	}
	defer sub.Unsubscribe()
	if err := sub.SetPendingLimits(maxReplies, min(maxReplies*maxBytes, 64<<20)); err != nil {
		return nil, nil, fmt.Errorf("catalogue: discovery: %w", err)
	}
	subject, _ := micro.ControlSubject(micro.InfoVerb, "", "")
	if err := nc.PublishRequest(subject, inbox, nil); err != nil {
		return nil, nil, fmt.Errorf("catalogue: discovery: %w", err)
	}
	// Flush so that the wait below measures the services, not our buffer.
	fctx, cancel := context.WithTimeout(ctx, win.max)
	err = nc.FlushWithContext(fctx)
	cancel()
	if err != nil {
		return nil, nil, fmt.Errorf("catalogue: discovery: %w", err)
	}

	end := time.Now().Add(win.max)
	wait := win.first
	var infos []micro.Info
	replies, total := 0, 0
	for {
		d := min(wait, time.Until(end))
		if d <= 0 {
			break
		}
		wctx, cancel := context.WithTimeout(ctx, d)
		msg, err := sub.NextMsgWithContext(wctx)
		cancel()
		switch {
		case err == nil:
		case ctx.Err() != nil:
			return nil, nil, fmt.Errorf("catalogue: discovery: %w", ctx.Err())
		case errors.Is(err, context.DeadlineExceeded):
			return infos, ignored, nil // the window closed: that is everyone
		case errors.Is(err, nats.ErrNoResponders):
			// No service at all: the server says so at once, which spares
			// waiting out the first window.
			return infos, ignored, nil
		case errors.Is(err, nats.ErrSlowConsumer):
			// The client dropped replies beyond the pending limits.
			ignored[IgnoredReplies]++
			continue
		default:
			return nil, nil, fmt.Errorf("catalogue: discovery: %w", err)
		}
		wait = win.quiet
		replies++
		switch {
		case replies > maxReplies:
			ignored[IgnoredReplies]++
			continue
		case len(msg.Data) > maxBytes || total+len(msg.Data) > maxDiscoveryBytes:
			ignored[IgnoredInfoBytes]++
			continue
		}
		total += len(msg.Data)
		var info micro.Info
		if json.Unmarshal(msg.Data, &info) == nil && info.Type == micro.InfoResponseType {
			infos = append(infos, info)
		}
	}
	if dropped, err := sub.Dropped(); err == nil && dropped > 0 {
		ignored[IgnoredReplies] += dropped
	}
	return infos, ignored, nil
}

// maxDiscoveryBytes bounds the INFO replies one discovery decodes, all
// together; replies beyond are ignored (IgnoredInfoBytes).
const maxDiscoveryBytes = 16 << 20

// maxWarnings bounds the warnings of one build: a service announcing
// thousands of bad names gets a few lines and a count.
const maxWarnings = 20

// warnings collects build's warnings, up to maxWarnings.
type warnings struct {
	list []string
	more int
}

func (w *warnings) add(format string, args ...any) {
	if len(w.list) >= maxWarnings {
		w.more++
		return
	}
	w.list = append(w.list, fmt.Sprintf(format, args...))
}

func (w *warnings) done() []string {
	if w.more > 0 {
		return append(w.list, fmt.Sprintf("%d more warnings like these", w.more))
	}
	return w.list
}

// build turns INFO replies into the catalogue. Only endpoints that carry
// the eryx.callback metadata, a valid name and exactly the subject of that
// name (<prefix>.cb.<name>) are callbacks: other micro services on the
// same NATS are never reachable from sandboxed code, no announcement can
// make the worker send requests elsewhere (e.g. to $JS.API), and a
// service can only take over a name whose subject NATS lets it serve (a
// service confined to <prefix>.cb.clock.> cannot announce "add").
//
// Replies are taken smallest first (by the number of callbacks they
// announce), then by service name and instance id, and endpoints by
// callback name: every worker keeps the same callbacks when the bounds
// (lim) cut some off, and a service announcing thousands of callbacks
// cannot crowd out the ordinary ones announced beside it. It returns the entries,
// the warnings, and how many callbacks were ignored by reason.
func build(infos []micro.Info, prefix string, lim limits) (map[string]*Entry, []string, map[string]int) {
	subjPrefix := callbacks.SubjectPrefix(prefix)
	out := map[string]*Entry{}
	ignored := map[string]int{}
	var warn warnings
	announced := func(info micro.Info) int {
		n := 0
		for _, ep := range info.Endpoints {
			if ep.Metadata[callbacks.MetaCallback] != "" {
				n++
			}
		}
		return n
	}
	slices.SortFunc(infos, func(a, b micro.Info) int {
		if c := announced(a) - announced(b); c != 0 {
			return c
		}
		if c := strings.Compare(a.Name, b.Name); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	perService := map[string]map[string]bool{} // service -> names taken
	for _, info := range infos {
		eps := slices.Clone(info.Endpoints)
		slices.SortFunc(eps, func(a, b micro.EndpointInfo) int {
			return strings.Compare(a.Metadata[callbacks.MetaCallback], b.Metadata[callbacks.MetaCallback])
		})
		for _, ep := range eps {
			name := ep.Metadata[callbacks.MetaCallback]
			if name == "" {
				continue
			}
			if !callbacks.ValidName(name) {
				warn.add("service %s: invalid callback name %q ignored", info.Name, name)
				continue
			}
			if ep.Subject != subjPrefix+name {
				warn.add("service %s: callback %q on subject %q, not %q: ignored", info.Name, name, ep.Subject, subjPrefix+name)
				ignored[IgnoredSubject]++
				continue
			}
			if lim.allow != nil && !lim.allow(info.Name, name) {
				ignored[IgnoredService]++
				continue
			}
			desc, rawSchema := ep.Metadata[callbacks.MetaDescription], ep.Metadata[callbacks.MetaSchema]
			if lim.specBytes > 0 && len(desc)+len(rawSchema) > lim.specBytes {
				ignored[IgnoredSpecBytes]++
				continue
			}
			var schema json.RawMessage
			if rawSchema != "" {
				if !json.Valid([]byte(rawSchema)) {
					warn.add("service %s: callback %q has an invalid schema, ignored", info.Name, name)
					continue
				}
				schema = json.RawMessage(rawSchema)
			}
			taken := perService[info.Name]
			if taken == nil {
				taken = map[string]bool{}
				perService[info.Name] = taken
			}
			if !taken[name] {
				if lim.perService > 0 && len(taken) >= lim.perService {
					ignored[IgnoredPerService]++
					continue
				}
				if _, known := out[name]; !known && lim.total > 0 && len(out) >= lim.total {
					ignored[IgnoredTotal]++
					continue
				}
				taken[name] = true
			}
			cand := &Entry{
				CallbackSpec: sandbox.CallbackSpec{Name: name, Description: desc, Schema: schema},
				Subject:      ep.Subject,
				Service:      info.Name,
				Version:      info.Version,
				Instances:    1,
				Tenants:      parseTenants(info.Metadata),
			}
			cur, ok := out[name]
			switch {
			case !ok:
				out[name] = cand
			case cur.Subject == cand.Subject:
				// Instances of one service (or a rolling upgrade): the
				// newest version describes the callback.
				cand.Instances = cur.Instances + 1
				if newer(cand, cur) {
					out[name] = cand
				} else {
					cur.Instances++
				}
			default:
				winner, loser := cur, cand
				if newer(cand, cur) {
					winner, loser = cand, cur
				}
				out[name] = winner
				warn.add("callback %q served on %s by %s %s and on %s by %s %s: using %s",
					name, winner.Subject, winner.Service, winner.Version, loser.Subject, loser.Service, loser.Version, winner.Subject)
			}
		}
	}
	return out, warn.done(), ignored
}

// newer orders candidates for one name: higher version, then the smaller
// service name and subject, so that every worker picks the same one.
func newer(a, b *Entry) bool {
	if c := compareVersions(a.Version, b.Version); c != 0 {
		return c > 0
	}
	if a.Service != b.Service {
		return a.Service < b.Service
	}
	return a.Subject < b.Subject
}

// compareVersions compares the numeric major.minor.patch of two SemVer
// strings; a release sorts after its pre-releases.
func compareVersions(a, b string) int {
	pa, prea := splitVersion(a)
	pb, preb := splitVersion(b)
	for i := range pa {
		if pa[i] != pb[i] {
			if pa[i] > pb[i] {
				return 1
			}
			return -1
		}
	}
	switch {
	case prea == preb:
		return 0
	case prea == "":
		return 1
	case preb == "":
		return -1
	case prea > preb:
		return 1
	}
	return -1
}

func splitVersion(v string) ([3]int, string) {
	v, _, _ = strings.Cut(v, "+")
	core, pre, _ := strings.Cut(v, "-")
	var out [3]int
	for i, p := range strings.SplitN(core, ".", 3) {
		out[i], _ = strconv.Atoi(p)
	}
	return out, pre
}
