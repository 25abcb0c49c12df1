// Package netx moves datagrams between the guest and the host of a Kata VM.
//
// It gives the address syntax every katatrace flag uses (vsock://, unix://,
// unixgram://, udp://, tcp://, fd://, serial://, stdout), the wire protocol
// v1 codec (hello, length-prefixed frames, flush requests), a bounded
// drop-oldest queue, and the two relays built on them: the guest Forwarder
// (datagrams in, one reconnecting stream out) and the host Server (many
// streams in, whole datagrams out to a Sink).
//
// netx knows nothing of Jaeger: a role that needs Thrift-aware recovery of
// raw socat streams hands the Server a split function.
package netx
