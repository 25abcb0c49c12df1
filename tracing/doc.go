// Package tracing knows Jaeger: the kernel command line's tracing settings,
// the Thrift compact emitBatch messages that Jaeger clients send (finding
// their boundaries in a raw byte stream, and decoding them), the host
// relay's Jaeger sinks (a tree printer, JSON lines, and the collector's HTTP
// endpoint with its queue and retries), and a jaeger-client-go transport
// that writes straight into a guest relay (NewTransport) or onto a stream to
// the host (DialTransport).
package tracing
