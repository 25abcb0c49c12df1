// Package guestid names the guest behind a host connection, one way for
// everything that needs to know: the host relay's limits and budgets, the
// sinks (which VM a span came from), the metrics, the logs, and the file
// descriptor store that keeps connections across restarts.
package guestid
