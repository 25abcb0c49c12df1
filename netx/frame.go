package netx

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Wire protocol v1 (docs/protocol.md).
const (
	// MaxDatagram is the largest payload one frame carries.
	MaxDatagram = 65535
	// HelloSize is the length of the hello the dialing side sends first.
	HelloSize = 8
	// Version1 is the protocol version this package speaks.
	Version1 = 0x01
	// FrameHeaderSize is the length prefix of every frame.
	FrameHeaderSize = 4
	// MaxFrameSize is the largest frame on the wire, header included.
	MaxFrameSize = FrameHeaderSize + MaxDatagram
)

// Kind says what the datagrams of a stream are.
type Kind byte

// The kinds of stream the hello announces.
const (
	KindJaeger Kind = 0x01 // Jaeger compact Thrift datagrams
	KindText   Kind = 0x02 // text or syslog messages
)

func (k Kind) String() string {
	switch k {
	case KindJaeger:
		return "jaeger"
	case KindText:
		return "text"
	}
	return fmt.Sprintf("kind 0x%02x", byte(k))
}

var magic = [4]byte{'K', 'T', 'R', 'C'}

// AppendHello appends the 8-byte hello for a stream of kind k.
func AppendHello(b []byte, k Kind) []byte {
	return append(append(b, magic[:]...), Version1, byte(k), 0, 0)
}

// AppendFrame appends one frame carrying p; an empty p is a flush request
// (or, from the host, its answer).
func AppendFrame(b []byte, p []byte) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(p)))
	return append(b, p...)
}

// ProtocolError is a peer breaking wire protocol v1. The connection it came
// on cannot be trusted any more and is closed; other peers are unaffected.
type ProtocolError struct {
	Reason string
}

func (e *ProtocolError) Error() string { return "protocol error: " + e.Reason }

func protoErr(format string, args ...any) error {
	return &ProtocolError{Reason: fmt.Sprintf(format, args...)}
}

// IsProtocolError reports whether err is, or wraps, a *ProtocolError.
func IsProtocolError(err error) bool {
	var pe *ProtocolError
	return errors.As(err, &pe)
}

// ReadHello looks at the start of a stream. A stream that starts with the
// hello magic has its hello consumed and checked: framed is true and kind is
// what it announced. Any other start is a legacy (socat) peer: framed is
// false and nothing is consumed. It decides as soon as the bytes seen differ
// from the magic, so a raw peer sending one short message is not kept
// waiting. br must buffer at least HelloSize bytes.
func ReadHello(br *bufio.Reader) (kind Kind, framed bool, err error) {
	for seen := 0; seen < len(magic); {
		// Wait for one byte more than was checked, then check all buffered.
		b, err := br.Peek(seen + 1)
		if err != nil {
			if len(b) > 0 && errors.Is(err, io.EOF) {
				return 0, false, nil // a short raw stream
			}
			return 0, false, err
		}
		seen = min(br.Buffered(), len(magic))
		if b, _ = br.Peek(seen); !bytes.Equal(b, magic[:seen]) {
			return 0, false, nil
		}
	}
	h, err := br.Peek(HelloSize)
	if err != nil {
		if errors.Is(err, io.EOF) {
			err = protoErr("stream ended inside the %d-byte hello", HelloSize)
		}
		return 0, false, err
	}
	if h[4] != Version1 {
		return 0, false, protoErr("hello announces protocol version %d; this side speaks version %d", h[4], Version1)
	}
	kind = Kind(h[5])
	if kind != KindJaeger && kind != KindText {
		return 0, false, protoErr("hello announces unknown stream kind 0x%02x", h[5])
	}
	if h[6] != 0 || h[7] != 0 {
		return 0, false, protoErr("hello reserved bytes are %#02x %#02x, want zero", h[6], h[7])
	}
	_, _ = br.Discard(HelloSize)
	return kind, true, nil
}

// FrameReader reads frames from a buffered stream without copying.
type FrameReader struct {
	br *bufio.Reader
}

// NewFrameReader reads frames from br, which must buffer at least
// MaxFrameSize bytes (see NewStreamReader).
func NewFrameReader(br *bufio.Reader) *FrameReader {
	if br.Size() < MaxFrameSize {
		panic("netx: FrameReader needs a bufio.Reader of at least MaxFrameSize bytes")
	}
	return &FrameReader{br: br}
}

// NewStreamReader returns a reader big enough for NewFrameReader.
func NewStreamReader(r io.Reader) *bufio.Reader {
	return bufio.NewReaderSize(r, 2*MaxFrameSize)
}

// Next returns the payload of the next frame, valid until the next call. An
// empty payload is a flush request (or its answer). At a frame boundary the
// end of the stream is io.EOF; inside a frame it is io.ErrUnexpectedEOF, and
// the partial frame is never returned. A length above MaxDatagram is a
// *ProtocolError.
func (fr *FrameReader) Next() ([]byte, error) {
	h, err := fr.br.Peek(FrameHeaderSize)
	if err != nil {
		if errors.Is(err, io.EOF) && len(h) > 0 {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	n := binary.BigEndian.Uint32(h)
	if n > MaxDatagram {
		return nil, protoErr("frame length %d exceeds the maximum of %d", n, MaxDatagram)
	}
	b, err := fr.br.Peek(FrameHeaderSize + int(n))
	if err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	_, _ = fr.br.Discard(len(b))
	return b[FrameHeaderSize:], nil
}
