package wire

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Wire protocols v1 and v2 (docs/protocol.md).
const (
	// MaxDatagram is the largest payload one frame carries.
	MaxDatagram = 65535
	// HelloSize is the length of the hello the dialing side sends first; a
	// v2 hello adds HelloV2Extra bytes (session, first sequence number).
	HelloSize    = 8
	HelloV2Extra = 16
	// Version1 and Version2 are the protocol versions this package speaks:
	// v2 numbers datagrams, and the host confirms what it handed on.
	Version1 = 0x01
	Version2 = 0x02
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
	// KindKataSpans is a Kata 2.2–4.x agent's own span stream: it has no
	// hello and no frames of this protocol (a host serves it raw), and a
	// katatrace guest never announces it.
	KindKataSpans Kind = 0x03
)

func (k Kind) String() string {
	switch k {
	case KindJaeger:
		return "jaeger"
	case KindText:
		return "text"
	case KindKataSpans:
		return "Kata agent spans"
	}
	return fmt.Sprintf("kind 0x%02x", byte(k))
}

var magic = [4]byte{'K', 'T', 'R', 'C'}

// AppendHello appends the 8-byte v1 hello for a stream of kind k.
func AppendHello(b []byte, k Kind) []byte {
	return append(append(b, magic[:]...), Version1, byte(k), 0, 0)
}

// AppendHelloV2 appends the 24-byte v2 hello: the stream's kind, the
// guest relay's session (random, one per process), and the sequence
// number of the first datagram frame that follows.
func AppendHelloV2(b []byte, k Kind, session, first uint64) []byte {
	b = append(append(b, magic[:]...), Version2, byte(k), 0, 0)
	return binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint64(b, session), first)
}

// Hello is what a framed stream announced.
type Hello struct {
	Version byte
	Kind    Kind
	// Session and First (v2): the guest relay's session and the sequence
	// number of the stream's first datagram frame.
	Session, First uint64
}

// ControlSeq marks a v2 control frame: "the next datagram frame is number N"
// (8 bytes), sent where the guest dropped datagrams the host never saw.
const ControlSeq = 0x80000000

// AppendSeq appends a v2 sequence control frame.
func AppendSeq(b []byte, next uint64) []byte {
	b = binary.BigEndian.AppendUint32(b, ControlSeq|8)
	return binary.BigEndian.AppendUint64(b, next)
}

// AppendAck appends the host's v2 confirmation: every datagram numbered
// below next was handed on, or counted as dropped or as a duplicate. Once
// the session has any its sink refused, the
// frame is 16 bytes and its second number says how many, so that the
// guest never believes everything was delivered when it was not.
func AppendAck(b []byte, next, dropped uint64) []byte {
	if dropped == 0 {
		return binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint32(b, 8), next)
	}
	b = binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint32(b, 16), next)
	return binary.BigEndian.AppendUint64(b, dropped)
}

// AppendFlushAnswer appends the host's answer to a flush request: an
// empty frame when its endpoint accepted every datagram of the guest's
// sent before it, else (v2 only) a control frame saying how many it had
// not: held for retrying, or dropped since the last answer.
func AppendFlushAnswer(b []byte, notAccepted uint64) []byte {
	if notAccepted == 0 {
		return AppendFrame(b, nil)
	}
	b = binary.BigEndian.AppendUint32(b, ControlSeq|8)
	return binary.BigEndian.AppendUint64(b, notAccepted)
}

// AppendFrame appends one frame carrying p; an empty p is a flush request
// (or, from the host, its answer).
func AppendFrame(b []byte, p []byte) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(p)))
	return append(b, p...)
}

// ProtocolError is a peer breaking the wire protocol: the side that sees it
// closes that connection and serves the others.
type ProtocolError struct {
	Reason string
}

func (e *ProtocolError) Error() string { return "protocol error: " + e.Reason }

// ProtocolErrorf makes a *ProtocolError.
func ProtocolErrorf(format string, args ...any) error {
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
func ReadHello(br *bufio.Reader) (h Hello, framed bool, err error) {
	for seen := 0; seen < len(magic); {
		// Wait for one byte more than was checked, then check all buffered.
		b, err := br.Peek(seen + 1)
		if err != nil {
			if len(b) > 0 && errors.Is(err, io.EOF) {
				return Hello{}, false, nil // a short raw stream
			}
			return Hello{}, false, err
		}
		seen = min(br.Buffered(), len(magic))
		if b, _ = br.Peek(seen); !bytes.Equal(b, magic[:seen]) {
			return Hello{}, false, nil
		}
	}
	b, err := br.Peek(HelloSize)
	if err != nil {
		if errors.Is(err, io.EOF) {
			err = ProtocolErrorf("stream ended inside the %d-byte hello", HelloSize)
		}
		return Hello{}, false, err
	}
	size := HelloSize
	switch b[4] {
	case Version1:
	case Version2:
		size += HelloV2Extra
	default:
		return Hello{}, false, ProtocolErrorf("hello announces protocol version %d; this side speaks versions %d and %d", b[4], Version1, Version2)
	}
	h = Hello{Version: b[4], Kind: Kind(b[5])}
	if h.Kind != KindJaeger && h.Kind != KindText {
		return Hello{}, false, ProtocolErrorf("hello announces unknown stream kind 0x%02x", b[5])
	}
	if b[6] != 0 || b[7] != 0 {
		return Hello{}, false, ProtocolErrorf("hello reserved bytes are %#02x %#02x, want zero", b[6], b[7])
	}
	if b, err = br.Peek(size); err != nil {
		if errors.Is(err, io.EOF) {
			err = ProtocolErrorf("stream ended inside the %d-byte hello", size)
		}
		return Hello{}, false, err
	}
	if h.Version == Version2 {
		h.Session, h.First = binary.BigEndian.Uint64(b[8:]), binary.BigEndian.Uint64(b[16:])
	}
	_, _ = br.Discard(size)
	return h, true, nil
}

// FrameReader reads frames from a buffered stream without copying.
type FrameReader struct {
	br Peeker
	// Control accepts v2 control frames (see NextFrame).
	Control bool
}

// Peeker is a buffered stream that can show a whole frame at once: a
// bufio.Reader of at least MaxFrameSize bytes (NewStreamReader), or a
// reader whose buffer grows for the frame (a host's, hold.Reader).
type Peeker interface {
	Peek(n int) ([]byte, error)
	Discard(n int) (int, error)
}

// NewFrameReader reads frames from br; a bufio.Reader must buffer at
// least MaxFrameSize bytes.
func NewFrameReader(br Peeker) *FrameReader {
	if b, ok := br.(*bufio.Reader); ok && b.Size() < MaxFrameSize {
		panic("wire: FrameReader needs a bufio.Reader of at least MaxFrameSize bytes")
	}
	return &FrameReader{br: br}
}

// streamBuffer is a host connection's read buffer: several large frames to a
// system call.
const streamBuffer = 256 << 10

// NewStreamReader returns a reader big enough for NewFrameReader.
func NewStreamReader(r io.Reader) *bufio.Reader {
	return bufio.NewReaderSize(r, streamBuffer)
}

// NextFrame returns the next frame's payload, without copying: valid
// until the next read of the stream. A datagram, or the empty payload of
// a flush request (a zero-length frame); with Control set, also v2
// control frames (ctl true; the only one is the 8-byte sequence frame).
// A length above MaxDatagram is a ProtocolError; the stream's end is
// io.EOF between frames, io.ErrUnexpectedEOF inside one.
func (fr *FrameReader) NextFrame() (p []byte, ctl bool, err error) {
	h, err := fr.br.Peek(FrameHeaderSize)
	if err != nil {
		if errors.Is(err, io.EOF) && len(h) > 0 {
			err = io.ErrUnexpectedEOF
		}
		return nil, false, err
	}
	n := binary.BigEndian.Uint32(h)
	switch {
	case fr.Control && n == ControlSeq|8:
		ctl, n = true, 8
	case n > MaxDatagram:
		return nil, false, ProtocolErrorf("frame length %d exceeds the maximum of %d", n, MaxDatagram)
	}
	b, err := fr.br.Peek(FrameHeaderSize + int(n))
	if err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return nil, false, err
	}
	_, _ = fr.br.Discard(len(b))
	return b[FrameHeaderSize:], ctl, nil
}
