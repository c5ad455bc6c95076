// Package charts holds eryx's Helm chart (charts/eryx) and, in its tests,
// the chart's CI: `helm lint` and `helm template` through Helm's own Go
// packages (no Helm binary or repository needed), then a strict decode of
// every rendered manifest into the typed Kubernetes API objects. Run it
// with `make chart-lint`.
package charts
