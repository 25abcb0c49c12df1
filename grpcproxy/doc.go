// Package grpcproxy is a transparent gRPC proxy that traces every call: it
// sits in front of the Kata agent's API and forwards every method, unary and
// streaming, byte for byte (a pass-through codec behind an unknown-service
// handler), with metadata, deadlines, cancellation, status codes and
// trailers preserved. Each call gets a span named by its full method; in
// collated mode the span's parent is the caller's uber-trace-id, and the
// proxy's own context is injected upstream so an agent that traces nests
// under it. StartTracing and StopTracing turn dynamic tracing on and off
// through a Controller, for agents built with or without tracing.
package grpcproxy
