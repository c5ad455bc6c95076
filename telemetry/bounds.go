package telemetry

import "github.com/prometheus/client_golang/prometheus"

// MetricBoundHits counts the worker's host-side bounds being hit.
const MetricBoundHits = "eryx_bound_hits_total"

// Bounds counts host-side bounds hit, by bound name (the worker's Bound*
// and the catalogue's Ignored* constants: a fixed set, never a name
// taken from a job). A nil *Bounds is valid and counts nothing.
type Bounds struct {
	hits *prometheus.CounterVec
}

// NewBounds registers the counter in reg (nil: an unregistered counter).
func NewBounds(reg *prometheus.Registry) *Bounds {
	b := &Bounds{hits: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: MetricBoundHits,
		Help: "Host-side bounds hit (cancel rate, warm-session memory, package size, callback discovery and installation), by bound.",
	}, []string{"bound"})}
	if reg != nil {
		reg.MustRegister(b.hits)
	}
	return b
}

// Hit counts one hit of bound.
func (b *Bounds) Hit(bound string) { b.Add(bound, 1) }

// Add counts n hits of bound.
func (b *Bounds) Add(bound string, n int) {
	if b == nil || n <= 0 {
		return
	}
	b.hits.WithLabelValues(bound).Add(float64(n))
}
