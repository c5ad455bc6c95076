package catalogue

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/eryx-dev/eryx/callbacks"
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
}

// discover gathers $SRV.INFO replies: it waits up to firstWait for the
// first one, then as long as replies keep coming within quiet of each
// other, never beyond maxWait. Request-many has no natural end, so these
// windows are what bounds a refresh.
func discover(ctx context.Context, nc *nats.Conn, firstWait, quiet, maxWait time.Duration) ([]micro.Info, error) {
	inbox := nc.NewInbox()
	sub, err := nc.SubscribeSync(inbox)
	if err != nil {
		return nil, fmt.Errorf("catalogue: discovery: %w", err)
	}
	defer sub.Unsubscribe()
	subject, _ := micro.ControlSubject(micro.InfoVerb, "", "")
	if err := nc.PublishRequest(subject, inbox, nil); err != nil {
		return nil, fmt.Errorf("catalogue: discovery: %w", err)
	}
	// Flush so that the wait below measures the services, not our buffer.
	fctx, cancel := context.WithTimeout(ctx, maxWait)
	err = nc.FlushWithContext(fctx)
	cancel()
	if err != nil {
		return nil, fmt.Errorf("catalogue: discovery: %w", err)
	}

	end := time.Now().Add(maxWait)
	wait := firstWait
	var infos []micro.Info
	for {
		d := min(wait, time.Until(end))
		if d <= 0 {
			return infos, nil
		}
		wctx, cancel := context.WithTimeout(ctx, d)
		msg, err := sub.NextMsgWithContext(wctx)
		cancel()
		switch {
		case err == nil:
		case ctx.Err() != nil:
			return nil, fmt.Errorf("catalogue: discovery: %w", ctx.Err())
		case errors.Is(err, context.DeadlineExceeded):
			return infos, nil // the window closed: that is everyone
		case errors.Is(err, nats.ErrNoResponders):
			// No service at all: the server says so at once, which spares
			// waiting out the first window.
			return infos, nil
		default:
			return nil, fmt.Errorf("catalogue: discovery: %w", err)
		}
		var info micro.Info
		if json.Unmarshal(msg.Data, &info) == nil && info.Type == micro.InfoResponseType {
			infos = append(infos, info)
		}
		wait = quiet
	}
}

// build turns INFO replies into the catalogue. Only endpoints that carry
// the eryx.callback metadata, a valid name and a plain subject under the
// platform's callback prefix are callbacks: other micro services on the
// same NATS are never reachable from sandboxed code, and no announcement
// can make the worker send requests elsewhere (e.g. to $JS.API).
func build(infos []micro.Info, prefix string) (map[string]*Entry, []string) {
	subjPrefix := callbacks.SubjectPrefix(prefix)
	out := map[string]*Entry{}
	var warnings []string
	for _, info := range infos {
		for _, ep := range info.Endpoints {
			name := ep.Metadata[callbacks.MetaCallback]
			if name == "" {
				continue
			}
			if !callbacks.ValidName(name) {
				warnings = append(warnings, fmt.Sprintf("service %s: invalid callback name %q ignored", info.Name, name))
				continue
			}
			if !strings.HasPrefix(ep.Subject, subjPrefix) || strings.ContainsAny(ep.Subject, "*> \t") {
				warnings = append(warnings, fmt.Sprintf("service %s: callback %q on subject %q outside %s ignored", info.Name, name, ep.Subject, subjPrefix+">"))
				continue
			}
			var schema json.RawMessage
			if s := ep.Metadata[callbacks.MetaSchema]; s != "" {
				if !json.Valid([]byte(s)) {
					warnings = append(warnings, fmt.Sprintf("service %s: callback %q has an invalid schema, ignored", info.Name, name))
					continue
				}
				schema = json.RawMessage(s)
			}
			cand := &Entry{
				CallbackSpec: sandbox.CallbackSpec{Name: name, Description: ep.Metadata[callbacks.MetaDescription], Schema: schema},
				Subject:      ep.Subject,
				Service:      info.Name,
				Version:      info.Version,
				Instances:    1,
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
				warnings = append(warnings, fmt.Sprintf("callback %q served on %s by %s %s and on %s by %s %s: using %s",
					name, winner.Subject, winner.Service, winner.Version, loser.Subject, loser.Service, loser.Version, winner.Subject))
			}
		}
	}
	return out, warnings
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
