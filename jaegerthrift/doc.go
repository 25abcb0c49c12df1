// Package jaegerthrift reads the Jaeger clients' Thrift compact emitBatch
// messages: walking one to find its end (and so a raw socat stream's
// datagram boundaries), decoding it, encoding a batch for a collector, and
// translating it into the OpenTelemetry model with the OpenTelemetry
// Collector's own Jaeger translator.
package jaegerthrift
