// Package tracing knows Jaeger: the kernel command line's tracing settings,
// tracer setup and span contexts, the Thrift compact emitBatch messages that
// Jaeger clients send (finding their boundaries in a raw byte stream, and
// decoding them for printing), and a jaeger-client-go transport that writes
// straight into a relay.
package tracing
