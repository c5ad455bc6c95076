// Package telemetry is eryx's observability plumbing: OpenTelemetry tracing
// configured from the standard OTEL_* environment variables, W3C trace-context
// propagation through NATS message headers with spans that follow the
// OpenTelemetry messaging conventions, Prometheus metrics for the worker, and
// the /livez, /readyz and /metrics HTTP endpoints.
//
// Nothing here is package-level mutable state: Setup, NewMetrics and NewHealth
// return values that the caller owns and passes around, so tests (and two
// workers in one process) never interfere with each other. Setup only touches
// the OpenTelemetry globals when Options.SetGlobal asks it to.
//
// One trace per job looks like this (see docs/observability.md):
//
//	send eryx.jobs.<queue>           producer  (eryx-submit, StartPublish)
//	├── receive eryx.jobs.<queue>    consumer  (worker: time spent queued)
//	└── process eryx.jobs.<queue>    consumer  (worker: execution, StartProcess)
//	    └── callback <name>          client    (worker: StartCallback)
//	        └── callback <name>      server    (callback service: StartServe)
//
// The methods on *Telemetry and *Metrics accept a nil receiver and then do
// nothing (spans still carry an incoming trace context through), so code
// paths with observability switched off need no conditionals.
package telemetry
