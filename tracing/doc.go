// Package tracing is the agent shim's own tracing: the kernel command
// line's tracing settings (agent.trace, agent.trace_parent), the shim's
// trace session (the root span and its children), and a jaeger-client-go
// transport that writes spans straight into a guest relay (NewTransport)
// or onto a stream to the host (DialTransport).
package tracing
