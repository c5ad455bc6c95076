package telemetry

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// scrape fetches /metrics through the worker's HTTP mux, as Prometheus
// would, and parses the text exposition.
func scrape(t *testing.T, m *Metrics) map[string]*dto.MetricFamily {
	t.Helper()
	srv := httptest.NewServer(NewMux(NewHealth(), m))
	defer srv.Close()
	resp, err := http.Get(srv.URL + PathMetrics)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %s", resp.Status)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	return families
}

// sample finds the series of family name whose labels include labels.
func sample(t *testing.T, families map[string]*dto.MetricFamily, name string, labels map[string]string) *dto.Metric {
	t.Helper()
	fam, ok := families[name]
	if !ok {
		t.Fatalf("no metric family %s", name)
	}
next:
	for _, m := range fam.GetMetric() {
		have := map[string]string{}
		for _, lp := range m.GetLabel() {
			have[lp.GetName()] = lp.GetValue()
		}
		for k, v := range labels {
			if have[k] != v {
				continue next
			}
		}
		return m
	}
	t.Fatalf("no series %s%v", name, labels)
	return nil
}

func TestMetricsScrape(t *testing.T) {
	m := NewMetrics()
	m.JobFinished("succeeded")
	m.JobFinished("succeeded")
	m.JobFinished("timeout")
	m.JobFinished("")
	m.QueueWait(30 * time.Millisecond)
	m.QueueWait(-time.Second) // clock skew is clamped to zero
	m.Execution(2 * time.Second)
	m.SandboxCreated()
	m.SandboxCreated()
	m.SandboxCreated()
	m.Callback("http_get", 4*time.Millisecond, nil)
	m.Callback("http_get", 6*time.Millisecond, errors.New("boom"))
	m.JobCancelled()
	m.DeadLettered()
	m.DeadLettered()
	m.NetworkRefused("not_allowed")
	m.NetworkRefused("blocked_address")
	m.NetworkRefused("blocked_address")
	m.SetPoolStats(func() PoolStats { return PoolStats{Idle: 3, InUse: 5} })

	families := scrape(t, m)
	tests := []struct {
		name   string
		labels map[string]string
		value  func(*dto.Metric) float64
		want   float64
	}{
		{MetricJobs, map[string]string{"status": "succeeded"}, counter, 2},
		{MetricJobs, map[string]string{"status": "timeout"}, counter, 1},
		{MetricJobs, map[string]string{"status": "unknown"}, counter, 1},
		{MetricQueueWait, nil, histCount, 2},
		{MetricQueueWait, nil, histSum, 0.03},
		{MetricExecution, nil, histCount, 1},
		{MetricExecution, nil, histSum, 2},
		{MetricSandboxCreations, nil, counter, 3},
		{MetricCallbackDuration, map[string]string{"callback": "http_get", "outcome": "ok"}, histCount, 1},
		{MetricCallbackDuration, map[string]string{"callback": "http_get", "outcome": "error"}, histCount, 1},
		{MetricCallbackDuration, map[string]string{"callback": "http_get", "outcome": "error"}, histSum, 0.006},
		{MetricCancellations, nil, counter, 1},
		{MetricDLQ, nil, counter, 2},
		{MetricNetRefusals, map[string]string{"reason": "not_allowed"}, counter, 1},
		{MetricNetRefusals, map[string]string{"reason": "blocked_address"}, counter, 2},
		{MetricPoolIdle, nil, gauge, 3},
		{MetricPoolInUse, nil, gauge, 5},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("%s%v", tc.name, tc.labels), func(t *testing.T) {
			got := tc.value(sample(t, families, tc.name, tc.labels))
			if diff := got - tc.want; diff > 1e-9 || diff < -1e-9 {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
	// Standard runtime metrics come along.
	if _, ok := families["go_goroutines"]; !ok {
		t.Error("no go_goroutines")
	}
}

func counter(m *dto.Metric) float64   { return m.GetCounter().GetValue() }
func gauge(m *dto.Metric) float64     { return m.GetGauge().GetValue() }
func histCount(m *dto.Metric) float64 { return float64(m.GetHistogram().GetSampleCount()) }
func histSum(m *dto.Metric) float64   { return m.GetHistogram().GetSampleSum() }

// TestMetricsBeforeUse: every family the docs list is exposed from the first
// scrape, so dashboards and alerts see zeros instead of missing series.
func TestMetricsBeforeUse(t *testing.T) {
	families := scrape(t, NewMetrics())
	for _, name := range []string{
		MetricQueueWait, MetricExecution, MetricPoolIdle, MetricPoolInUse,
		MetricSandboxCreations, MetricCancellations, MetricDLQ,
	} {
		if _, ok := families[name]; !ok {
			t.Errorf("%s missing before first use", name)
		}
	}
	if v := gauge(sample(t, families, MetricPoolIdle, nil)); v != 0 {
		t.Errorf("pool idle without a stats func = %v", v)
	}
}

func TestCallbackLabelBounded(t *testing.T) {
	m := NewMetrics()
	for i := range maxCallbackNames + 10 {
		m.Callback(fmt.Sprintf("cb%d", i), time.Millisecond, nil)
	}
	m.Callback("cb0", time.Millisecond, nil) // known names keep their label
	families := scrape(t, m)
	fam := families[MetricCallbackDuration]
	if n := len(fam.GetMetric()); n != maxCallbackNames+1 {
		t.Errorf("%d callback series, want %d (+1 for %q)", n, maxCallbackNames+1, OtherCallback)
	}
	if c := histCount(sample(t, families, MetricCallbackDuration, map[string]string{"callback": OtherCallback})); c != 10 {
		t.Errorf("other = %v, want 10", c)
	}
	if c := histCount(sample(t, families, MetricCallbackDuration, map[string]string{"callback": "cb0"})); c != 2 {
		t.Errorf("cb0 = %v, want 2", c)
	}
}

// TestUnknownCallbacksCannotEvictRealOnes is issue 10's row 8: a job
// invoking many made-up names (counted under UnknownCallback by the
// caller) leaves every place of the bounded label set to real callbacks.
func TestUnknownCallbacksCannotEvictRealOnes(t *testing.T) {
	m := NewMetrics()
	for range 10 * maxCallbackNames {
		m.Callback(UnknownCallback, time.Millisecond, errors.New("unknown"))
	}
	for i := range maxCallbackNames {
		m.Callback(fmt.Sprintf("real%d", i), time.Millisecond, nil)
	}
	families := scrape(t, m)
	if c := histCount(sample(t, families, MetricCallbackDuration, map[string]string{"callback": UnknownCallback, "outcome": "error"})); c != 10*maxCallbackNames {
		t.Errorf("unknown = %v, want %d", c, 10*maxCallbackNames)
	}
	for i := range maxCallbackNames {
		name := fmt.Sprintf("real%d", i)
		if c := histCount(sample(t, families, MetricCallbackDuration, map[string]string{"callback": name})); c != 1 {
			t.Errorf("%s = %v, want 1", name, c)
		}
	}
	for _, s := range families[MetricCallbackDuration].GetMetric() {
		for _, l := range s.GetLabel() {
			if l.GetName() == "callback" && l.GetValue() == OtherCallback {
				t.Errorf("a real callback was counted as %q", OtherCallback)
			}
		}
	}
}

func TestLimitExceededCounted(t *testing.T) {
	m := NewMetrics()
	m.LimitExceeded("host_calls")
	m.LimitExceeded("host_calls")
	m.LimitExceeded("host_call_bytes")
	families := scrape(t, m)
	for limit, want := range map[string]float64{"host_calls": 2, "host_call_bytes": 1} {
		if v := counter(sample(t, families, MetricLimitExceeded, map[string]string{"limit": limit})); v != want {
			t.Errorf("%s = %v, want %v", limit, v, want)
		}
	}
}

func TestNilMetrics(t *testing.T) {
	var m *Metrics
	m.JobFinished("x")
	m.QueueWait(time.Second)
	m.Execution(time.Second)
	m.SandboxCreated()
	m.Callback("x", time.Second, nil)
	m.JobCancelled()
	m.DeadLettered()
	m.LimitExceeded("x")
	m.TenantJobFinished("a", "ok")
	m.QuotaExceeded("a", "max_running")
	m.NetworkRefused("x")
	m.SetPoolStats(nil)
	if m.Registry() != nil {
		t.Error("nil Metrics has a registry")
	}
	srv := httptest.NewServer(NewMux(nil, m))
	defer srv.Close()
	resp, err := http.Get(srv.URL + PathMetrics)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusNotFound || strings.Contains(string(body), "eryx_") {
		t.Errorf("nil Metrics served %s: %s", resp.Status, body)
	}
}

func TestTenantLabelBounded(t *testing.T) {
	m := NewMetrics()
	for i := range maxTenantLabels + 10 {
		m.TenantJobFinished(fmt.Sprintf("t%d", i), "ok")
	}
	m.TenantJobFinished("t0", "ok") // known tenants keep their label
	m.QuotaExceeded("t1", "submissions_per_second")
	m.QuotaExceeded("late-comer", "memory_per_job")
	families := scrape(t, m)
	if n := len(families[MetricTenantJobs].GetMetric()); n != maxTenantLabels+1 {
		t.Errorf("%d tenant series, want %d (+1 for %q)", n, maxTenantLabels+1, OtherTenant)
	}
	if v := counter(sample(t, families, MetricTenantJobs, map[string]string{"tenant": OtherTenant})); v != 10 {
		t.Errorf("other = %v, want 10", v)
	}
	if v := counter(sample(t, families, MetricTenantJobs, map[string]string{"tenant": "t0"})); v != 2 {
		t.Errorf("t0 = %v, want 2", v)
	}
	if v := counter(sample(t, families, MetricQuotaExceeded, map[string]string{"tenant": "t1", "limit": "submissions_per_second"})); v != 1 {
		t.Errorf("t1 quota = %v, want 1", v)
	}
	if v := counter(sample(t, families, MetricQuotaExceeded, map[string]string{"tenant": OtherTenant, "limit": "memory_per_job"})); v != 1 {
		t.Errorf("late-comer quota = %v, want 1", v)
	}
}
