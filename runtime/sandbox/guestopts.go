package sandbox

import (
	"context"
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
)

// guestOptions is the JSON document eryx_exec passes to _eryx.run.
type guestOptions struct {
	Callbacks []CallbackSpec `json:"callbacks,omitempty"`
	// Refused lists callbacks that cannot be exposed, with the reason.
	Refused []string `json:"refused,omitempty"`
	Trace   bool     `json:"trace,omitempty"`
	// Network is passed to the guest's network shims when a gateway serves
	// the execution (ExecOptions.Network).
	Network json.RawMessage `json:"network,omitempty"`
	// Packages are the guest paths of the package archives, for sys.path.
	Packages []string `json:"packages,omitempty"`
	// Env is set in os.environ (and eryx.secret) for the execution.
	Env map[string]string `json:"env,omitempty"`
}

var identifier = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// reservedNames are names the runtime owns in the user's namespace, plus
// Python keywords and builtins (checked in the guest, which knows them).
var reservedNames = map[string]bool{
	"invoke": true, "list_callbacks": true, "result": true, "eryx": true,
	"asyncio": true, "__builtins__": true, "__name__": true,
}

// CheckCallbackName reports why name cannot be exposed to Python, if so.
// Builtins and keywords are refused by the guest, which knows its own.
func CheckCallbackName(name string) error {
	if name == "" {
		return fmt.Errorf("empty callback name")
	}
	parts := strings.Split(name, ".")
	for _, p := range parts {
		if !identifier.MatchString(p) {
			return fmt.Errorf("callback name %q: %q is not a Python identifier", name, p)
		}
	}
	if reservedNames[parts[0]] {
		return fmt.Errorf("callback name %q would shadow the runtime's own %q", name, parts[0])
	}
	return nil
}

func (sb *Sandbox) guestOptions(ctx context.Context, opts *ExecOptions, extra map[string]any) ([]byte, error) {
	if extra != nil {
		return json.Marshal(extra)
	}
	g := guestOptions{Trace: opts.OnTrace != nil, Network: opts.Network, Env: opts.Env}
	for _, p := range opts.Packages {
		g.Packages = append(g.Packages, p.File())
	}
	if opts.Callbacks != nil {
		specs, err := opts.Callbacks.List(ctx)
		if err != nil {
			return nil, fmt.Errorf("sandbox: listing callbacks: %w", err)
		}
		for _, s := range specs {
			if err := CheckCallbackName(s.Name); err != nil {
				g.Refused = append(g.Refused, err.Error())
				continue
			}
			g.Callbacks = append(g.Callbacks, s)
		}
	}
	return json.Marshal(g)
}
