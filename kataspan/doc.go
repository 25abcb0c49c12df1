// Package kataspan reads the spans that Kata Containers 2.2–4.x agents
// send to the host themselves (the vsock-exporter crate, vsock port
// 10240): each frame's payload is one opentelemetry-rust SpanData, as
// serde_json of opentelemetry 0.17 (Kata 3.29 and later) or bincode of
// opentelemetry 0.14 (Kata 2.2 to 3.28). Decode reads either into a Span,
// which nothing of the payload is lost from, and Span.Traces puts it into
// the OpenTelemetry model (pdata) for the sinks. Sink decodes a host
// relay's frames on their way to any sink.
package kataspan
