package telemetry

import (
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics are the worker's Prometheus metrics.
//
// They are built on prometheus/client_golang directly rather than on the
// OpenTelemetry metrics SDK plus its Prometheus exporter: Prometheus scraping
// is the one sink the worker needs, the exporter would put a translation
// layer between the instrument names and the series names operators query
// (unit and _total suffixes, otel_scope_* labels, target_info) whose rules
// have changed between exporter releases, and client_golang's hot path is a
// few atomic adds. Each Metrics owns a private registry, so there is no
// global state and tests can make as many as they like.
//
// A nil *Metrics is valid: every method is then a no-op.
type Metrics struct {
	reg *prometheus.Registry

	jobs          *prometheus.CounterVec
	queueWait     prometheus.Histogram
	execution     prometheus.Histogram
	sandboxes     prometheus.Counter
	callbacks     *prometheus.HistogramVec
	cancellations prometheus.Counter
	deadLetters   prometheus.Counter
	advRejected   prometheus.Counter
	netRefusals   *prometheus.CounterVec
	limits        *prometheus.CounterVec
	tenantJobs    *prometheus.CounterVec
	quotas        *prometheus.CounterVec

	pool *poolCollector

	mu            sync.Mutex
	callbackNames map[string]struct{}
	tenantNames   map[string]struct{}
}

// Metric names, as documented in docs/observability.md.
const (
	MetricJobs             = "eryx_jobs_total"
	MetricQueueWait        = "eryx_job_queue_wait_seconds"
	MetricExecution        = "eryx_job_execution_seconds"
	MetricPoolIdle         = "eryx_pool_sandboxes_idle"
	MetricPoolInUse        = "eryx_pool_sandboxes_in_use"
	MetricSandboxCreations = "eryx_sandbox_creations_total"
	MetricCallbackDuration = "eryx_callback_duration_seconds"
	MetricCancellations    = "eryx_job_cancellations_total"
	MetricDLQ              = "eryx_dlq_entries_total"
	MetricAdvRejected      = "eryx_dlq_advisories_rejected_total"
	MetricNetRefusals      = "eryx_network_refusals_total"
	MetricLimitExceeded    = "eryx_job_limit_exceeded_total"
	MetricTenantJobs       = "eryx_tenant_jobs_total"
	MetricQuotaExceeded    = "eryx_quota_exceeded_total"
)

// maxTenantLabels bounds the tenant label's cardinality: the first
// maxTenantLabels tenants a worker sees get a label of their own, every
// later one is counted as OtherTenant (a worker's process lifetime).
const maxTenantLabels = 32

// OtherTenant is the tenant label value once maxTenantLabels is reached.
const OtherTenant = "other"

// maxCallbackNames bounds the callback label's cardinality. Callback names
// come from job code, which is untrusted: without a bound, a job calling
// made-up names could grow the worker's memory and the Prometheus series
// count without limit. Names past the bound are counted as "other".
const maxCallbackNames = 64

// OtherCallback is the callback label value once maxCallbackNames is reached.
const OtherCallback = "other"

// UnknownCallback is the callback label of invocations of names that are
// not in the catalogue. Callers must pass it for any name they have not
// found in the catalogue: it never takes one of the maxCallbackNames
// places, so made-up names cannot push real ones out to "other".
const UnknownCallback = "(unknown)"

// Job durations run from milliseconds (a print) to the execution timeout
// (minutes), so the buckets are roughly logarithmic up to 10 minutes.
var durationBuckets = []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600}

// Callbacks are NATS round trips: sub-millisecond up to their timeout.
var callbackBuckets = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}

// NewMetrics makes the worker's metrics in a fresh registry, together with
// the standard Go runtime and process collectors.
func NewMetrics() *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		jobs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: MetricJobs,
			Help: "Jobs finished by this worker, by final status.",
		}, []string{"status"}),
		queueWait: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    MetricQueueWait,
			Help:    "Time from a job being enqueued to a worker starting it.",
			Buckets: durationBuckets,
		}),
		execution: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    MetricExecution,
			Help:    "Time a job spent executing in its sandbox.",
			Buckets: durationBuckets,
		}),
		sandboxes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: MetricSandboxCreations,
			Help: "Sandboxes instantiated (restored from the snapshot) by the pool.",
		}),
		callbacks: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    MetricCallbackDuration,
			Help:    "Latency of callback invocations, by callback name and outcome (ok or error).",
			Buckets: callbackBuckets,
		}, []string{"callback", "outcome"}),
		cancellations: prometheus.NewCounter(prometheus.CounterOpts{
			Name: MetricCancellations,
			Help: "Jobs cancelled while queued or running.",
		}),
		deadLetters: prometheus.NewCounter(prometheus.CounterOpts{
			Name: MetricDLQ,
			Help: "Jobs moved to the dead-letter queue.",
		}),
		advRejected: prometheus.NewCounter(prometheus.CounterOpts{
			Name: MetricAdvRejected,
			Help: "Max-deliveries advisories ignored because the consumer's state contradicted them (forged or stale).",
		}),
		netRefusals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: MetricNetRefusals,
			Help: "Outbound connections from sandboxes refused by the network gateway, by reason.",
		}, []string{"reason"}),
		limits: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: MetricLimitExceeded,
			Help: "Jobs stopped for exceeding a host-side budget, by limit.",
		}, []string{"limit"}),
		tenantJobs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: MetricTenantJobs,
			Help: "Jobs finished by this worker, by tenant (the first 32 seen; then \"other\") and final status.",
		}, []string{"tenant", "status"}),
		quotas: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: MetricQuotaExceeded,
			Help: "Jobs rejected for exceeding a tenant quota, by tenant (as in eryx_tenant_jobs_total) and quota.",
		}, []string{"tenant", "limit"}),
		pool:          newPoolCollector(),
		callbackNames: make(map[string]struct{}),
		tenantNames:   make(map[string]struct{}),
	}
	m.reg.MustRegister(
		m.jobs, m.queueWait, m.execution, m.sandboxes, m.callbacks,
		m.cancellations, m.deadLetters, m.advRejected, m.netRefusals, m.limits, m.tenantJobs, m.quotas, m.pool,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return m
}

// Registry is the registry behind the metrics, for registering more
// collectors next to them.
func (m *Metrics) Registry() *prometheus.Registry {
	if m == nil {
		return nil
	}
	return m.reg
}

// Handler serves the metrics in the Prometheus exposition formats.
func (m *Metrics) Handler() http.Handler {
	if m == nil {
		return http.NotFoundHandler()
	}
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}

// JobFinished counts a job that reached a final status, such as
// "succeeded", "failed", "timeout" or "cancelled". Keep the set of statuses
// small and fixed: each one is a time series.
func (m *Metrics) JobFinished(status string) {
	if m == nil {
		return
	}
	if status == "" {
		status = "unknown"
	}
	m.jobs.WithLabelValues(status).Inc()
}

// QueueWait records how long a job waited between being enqueued and a
// worker starting it.
func (m *Metrics) QueueWait(d time.Duration) {
	if m == nil {
		return
	}
	m.queueWait.Observe(max(d, 0).Seconds())
}

// Execution records how long a job ran in its sandbox.
func (m *Metrics) Execution(d time.Duration) {
	if m == nil {
		return
	}
	m.execution.Observe(max(d, 0).Seconds())
}

// SandboxCreated counts one sandbox instantiation.
func (m *Metrics) SandboxCreated() {
	if m == nil {
		return
	}
	m.sandboxes.Inc()
}

// Callback records one callback invocation's latency; err is its outcome.
// name must be a catalogue name, or UnknownCallback.
func (m *Metrics) Callback(name string, d time.Duration, err error) {
	if m == nil {
		return
	}
	outcome := "ok"
	if err != nil {
		outcome = "error"
	}
	m.callbacks.WithLabelValues(m.callbackLabel(name), outcome).Observe(max(d, 0).Seconds())
}

func (m *Metrics) callbackLabel(name string) string {
	if name == UnknownCallback {
		return name
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.callbackNames[name]; ok {
		return name
	}
	if len(m.callbackNames) >= maxCallbackNames {
		return OtherCallback
	}
	m.callbackNames[name] = struct{}{}
	return name
}

// tenantLabel bounds the tenant label (see maxTenantLabels).
func (m *Metrics) tenantLabel(tenant string) string {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.tenantNames[tenant]; ok {
		return tenant
	}
	if len(m.tenantNames) >= maxTenantLabels {
		return OtherTenant
	}
	m.tenantNames[tenant] = struct{}{}
	return tenant
}

// TenantJobFinished counts a finished job of tenant.
func (m *Metrics) TenantJobFinished(tenant, status string) {
	if m == nil {
		return
	}
	if status == "" {
		status = "unknown"
	}
	m.tenantJobs.WithLabelValues(m.tenantLabel(tenant), status).Inc()
}

// QuotaExceeded counts a job of tenant rejected by the named quota.
func (m *Metrics) QuotaExceeded(tenant, limit string) {
	if m == nil {
		return
	}
	m.quotas.WithLabelValues(m.tenantLabel(tenant), limit).Inc()
}

// JobCancelled counts one cancellation.
func (m *Metrics) JobCancelled() {
	if m == nil {
		return
	}
	m.cancellations.Inc()
}

// LimitExceeded counts a job stopped for exceeding the named host-side
// budget (a fixed set of names from the runtime).
func (m *Metrics) LimitExceeded(limit string) {
	if m == nil {
		return
	}
	m.limits.WithLabelValues(limit).Inc()
}

// DeadLettered counts one job moved to the dead-letter queue.
func (m *Metrics) DeadLettered() {
	if m == nil {
		return
	}
	m.deadLetters.Inc()
}

// AdvisoryRejected counts one max-deliveries advisory the worker did not
// act on, because the job had not exhausted its deliveries.
func (m *Metrics) AdvisoryRejected() {
	if m == nil {
		return
	}
	m.advRejected.Inc()
}

// NetworkRefused counts one connection refused by the network gateway.
// reason is a short fixed word; the worker uses netgate's refusal kinds:
// "disabled", "not_allowed", "blocked_address" and "limit".
func (m *Metrics) NetworkRefused(reason string) {
	if m == nil {
		return
	}
	if reason == "" {
		reason = "unknown"
	}
	m.netRefusals.WithLabelValues(reason).Inc()
}

// PoolStats is a snapshot of the sandbox pool.
type PoolStats struct {
	Idle  int // warm sandboxes waiting for a job
	InUse int // sandboxes running a job
}

// SetPoolStats registers the function that reports the pool's state. It is
// called on every scrape, so both gauges come from one consistent snapshot
// and the pool never has to push updates. It must be cheap and safe to call
// from any goroutine. Calling it again replaces the function; nil removes it.
func (m *Metrics) SetPoolStats(fn func() PoolStats) {
	if m == nil {
		return
	}
	m.pool.set(fn)
}

// poolCollector reads the pool gauges on demand.
type poolCollector struct {
	idle, inUse *prometheus.Desc

	mu sync.Mutex
	fn func() PoolStats
}

func newPoolCollector() *poolCollector {
	return &poolCollector{
		idle:  prometheus.NewDesc(MetricPoolIdle, "Warm sandboxes in the pool waiting for a job.", nil, nil),
		inUse: prometheus.NewDesc(MetricPoolInUse, "Sandboxes currently running a job.", nil, nil),
	}
}

func (p *poolCollector) set(fn func() PoolStats) {
	p.mu.Lock()
	p.fn = fn
	p.mu.Unlock()
}

// Describe implements prometheus.Collector.
func (p *poolCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- p.idle
	ch <- p.inUse
}

// Collect implements prometheus.Collector.
func (p *poolCollector) Collect(ch chan<- prometheus.Metric) {
	p.mu.Lock()
	fn := p.fn
	p.mu.Unlock()
	var s PoolStats
	if fn != nil {
		s = fn()
	}
	ch <- prometheus.MustNewConstMetric(p.idle, prometheus.GaugeValue, float64(s.Idle))
	ch <- prometheus.MustNewConstMetric(p.inUse, prometheus.GaugeValue, float64(s.InUse))
}
