package netgate

import (
	"context"
	"crypto/x509"
	"net"
	"net/netip"
)

// Resolver looks up host names. *net.Resolver implements it; tests inject
// their own to map names to local addresses without touching /etc/hosts.
type Resolver interface {
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
}

// Config configures a Gateway.
type Config struct {
	// Policy is the worker's ceiling; every session narrows it.
	Policy Policy
	// Resolver resolves names; nil means net.DefaultResolver.
	Resolver Resolver
	// OnRefusal is called for every refusal (policy or limit) of every
	// session with its kind as a short word (KindDisabled, KindNotAllowed,
	// KindBlockedAddress, KindLimit: a bounded set, fit for a metric
	// label) and the host the code asked for. It runs on the refusing
	// goroutine and must not block. The full reason goes to Python, and
	// the guest shim emits the "network_refused" trace event with it.
	OnRefusal func(reason, host string)
}

// Gateway holds what is shared by the sessions of a worker: the ceiling
// policy, the resolver and the trust store.
type Gateway struct {
	policy    Policy
	resolver  Resolver
	roots     *x509.CertPool
	onRefusal func(reason, host string)
}

// NewGateway validates the policy and loads the trust store: the system
// pool plus Policy.ExtraCACerts.
func NewGateway(cfg Config) (*Gateway, error) {
	if err := cfg.Policy.Validate(); err != nil {
		return nil, err
	}
	roots, err := x509.SystemCertPool()
	if err != nil {
		// No system store (a scratch container): only the extra CAs.
		roots = x509.NewCertPool()
	}
	if len(cfg.Policy.ExtraCACerts) > 0 {
		certs, err := parseCerts(cfg.Policy.ExtraCACerts)
		if err != nil {
			return nil, err
		}
		for _, c := range certs {
			roots.AddCert(c)
		}
	}
	g := &Gateway{policy: cfg.Policy.WithDefaults(), resolver: cfg.Resolver, roots: roots, onRefusal: cfg.OnRefusal}
	if g.resolver == nil {
		g.resolver = net.DefaultResolver
	}
	return g, nil
}

// Policy returns the gateway's ceiling, defaults made explicit.
func (g *Gateway) Policy() Policy { return g.policy.WithDefaults() }

// NewSession starts the network session of one execution under the
// ceiling narrowed by the job's request (the zero Request keeps the
// ceiling). Pass it as sandbox.ExecOptions.Host, with GuestOptions as
// ExecOptions.Network, and Close it when the execution ends.
func (g *Gateway) NewSession(req Request) *Session {
	pol, err := g.policy.Narrow(req).compile()
	if err != nil {
		// Narrow only produces valid policies; should that ever change,
		// fail closed.
		pol, _ = Policy{}.compile()
	}
	return newSession(g, pol)
}
