package netx

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"sync"
	"unicode/utf8"
)

// PacketSink sends each datagram as one datagram to a udp:// or unixgram://
// address: the host side of the Jaeger relay.
type PacketSink struct {
	conn   net.Conn
	target string
}

// DialPacketSink opens a datagram socket towards a.
func DialPacketSink(a Addr) (*PacketSink, error) {
	c, err := DialPacket(a)
	if err != nil {
		return nil, err
	}
	return &PacketSink{conn: c, target: a.String()}, nil
}

// Send writes p as one datagram.
func (s *PacketSink) Send(p []byte, _ string) error {
	if _, err := s.conn.Write(p); err != nil {
		return fmt.Errorf("send to %s: %w", s.target, err)
	}
	return nil
}

// Flush has nothing to do: a datagram is handed on when Send returns.
func (s *PacketSink) Flush() error { return nil }

// Close closes the socket.
func (s *PacketSink) Close() error { return s.conn.Close() }

// LineSink writes each message as one line, prefixed by its peer, with
// control characters and escape sequences made visible so that a guest can
// never drive the host's terminal.
type LineSink struct {
	mu  sync.Mutex
	w   *bufio.Writer
	buf []byte
}

// NewLineSink writes lines to w.
func NewLineSink(w io.Writer) *LineSink {
	return &LineSink{w: bufio.NewWriterSize(w, 64<<10)}
}

// Send writes "peer: message\n".
func (s *LineSink) Send(p []byte, peer string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.buf = append(append(s.buf[:0], peer...), ": "...)
	s.buf = append(AppendEscaped(s.buf, p), '\n')
	if _, err := s.w.Write(s.buf); err != nil {
		return err
	}
	// Lines show up at once: a person may be watching.
	return s.w.Flush()
}

// Flush flushes the writer.
func (s *LineSink) Flush() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Flush()
}

// AppendEscaped appends message p as one line without its line ending: one
// trailing "\n" (or "\r\n") is dropped, and every other control character,
// DEL, C1 control, bidirectional override and invalid UTF-8 byte becomes a
// visible escape (\n, \r, \x1b, \u009b, \u202e). Tabs stay; a backslash
// doubles, so the escaping cannot be forged.
func AppendEscaped(dst, p []byte) []byte {
	if n := len(p); n > 0 && p[n-1] == '\n' {
		p = p[:n-1]
		if n > 1 && p[n-2] == '\r' {
			p = p[:n-2]
		}
	}
	const hex = "0123456789abcdef"
	for len(p) > 0 {
		r, size := utf8.DecodeRune(p)
		switch {
		case r == utf8.RuneError && size <= 1:
			dst = append(dst, '\\', 'x', hex[p[0]>>4], hex[p[0]&15])
		case r == '\\':
			dst = append(dst, '\\', '\\')
		case r == '\t':
			dst = append(dst, '\t')
		case r == '\n':
			dst = append(dst, '\\', 'n')
		case r == '\r':
			dst = append(dst, '\\', 'r')
		case r < 0x20 || r == 0x7f:
			dst = append(dst, '\\', 'x', hex[r>>4], hex[r&15])
		case r >= 0x80 && r <= 0x9f, r >= 0x202a && r <= 0x202e, r >= 0x2066 && r <= 0x2069:
			dst = fmt.Appendf(dst, "\\u%04x", r)
		default:
			dst = append(dst, p[:size]...)
		}
		p = p[size:]
	}
	return dst
}
