// Package sink is where the host relay hands datagrams: the Sink contract,
// and every sink a host role can name with --to: datagram sockets (UDP,
// unixgram) each datagram as it came, escaped lines for text, and for
// Jaeger traces a Jaeger collector over HTTP, OTLP over gRPC or HTTP (the
// guest named on each resource), a tree printer and JSON lines. The
// collector and OTLP sinks queue, retry and count what they drop.
package sink
