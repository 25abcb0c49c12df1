// Package metrics serves katatrace's counters as Prometheus metrics, at
// /metrics on --metrics-listen: the host relay's per guest (VM), a guest
// relay's per stream. Every name starts with katatrace_; docs/guide.md
// lists them.
package metrics
