// Package wire is the protocol between katatrace's guest and host relays:
// the hello (protocol v1 and v2, the stream's kind, v2's session and first
// datagram number), length-prefixed frames that carry one datagram each,
// flush requests and their answers, v2's confirmations and sequence
// frames, and the reader that takes frames off a stream without copying.
// docs/protocol.md describes the bytes.
package wire
