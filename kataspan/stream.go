package kataspan

import (
	"bufio"
	"context"
	"encoding/binary"

	"github.com/katatrace/katatrace/guestid"
	"github.com/katatrace/katatrace/sink"
	"github.com/katatrace/katatrace/wire"
)

// Port is the vsock port Kata agents send their spans to.
const Port = 10240

// HeaderSize is a frame's header: the payload's length, a big-endian u64.
const HeaderSize = 8

// DefaultMaxSpan bounds one span's payload unless told otherwise: far
// above what an agent's span takes (a few KiB), far below what a guest
// could make the host hold.
const DefaultMaxSpan = 4 << 20

// SplitFrames cuts a Kata span stream into payloads for a bufio.Scanner:
// 8 bytes of big-endian length, then that many bytes. A length over max
// is a *wire.ProtocolError (the stream cannot be trusted after it); a
// stream that ends inside a frame is io.ErrUnexpectedEOF.
func SplitFrames(max int) bufio.SplitFunc {
	return func(data []byte, atEOF bool) (int, []byte, error) {
		if len(data) < HeaderSize {
			if atEOF && len(data) > 0 {
				return 0, nil, unexpectedEOF(len(data))
			}
			return 0, nil, nil
		}
		n := binary.BigEndian.Uint64(data)
		if n > uint64(max) {
			return 0, nil, wire.ProtocolErrorf("a span of %d bytes announced; the limit is %d", n, max)
		}
		if end := HeaderSize + int(n); len(data) >= end {
			return end, data[HeaderSize:end], nil
		} else if atEOF {
			return 0, nil, unexpectedEOF(len(data))
		}
		return 0, nil, nil
	}
}

func unexpectedEOF(have int) error {
	return wire.ProtocolErrorf("the stream ended inside a frame (%d bytes of it)", have)
}

// Sink decodes each payload a host relay hands it and sends the span on to
// out, in the OpenTelemetry model (see sink.SendTraces). A payload that
// does not decode is sink.ErrMalformed: the relay closes that guest's
// connection.
type Sink struct {
	out     sink.Sink
	service string
}

// NewSink sends to out; service names spans whose resource has no
// service name (Kata's --trace-name).
func NewSink(out sink.Sink, service string) *Sink { return &Sink{out: out, service: service} }

// Send decodes p, one span, and sends it on.
func (s *Sink) Send(p []byte, from guestid.ID) error {
	span, err := Decode(p)
	if err != nil {
		return sink.Malformed(err)
	}
	td, err := span.Traces(s.service)
	if err != nil {
		return sink.Malformed(err)
	}
	return sink.SendTraces(s.out, td, from)
}

// Flush flushes out.
func (s *Sink) Flush(ctx context.Context) error { return s.out.Flush(ctx) }

// Close closes out.
func (s *Sink) Close(ctx context.Context) error { return s.out.Close(ctx) }

// Unwrap is the sink spans go to (for its own counters).
func (s *Sink) Unwrap() sink.Sink { return s.out }
