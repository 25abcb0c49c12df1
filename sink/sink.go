package sink

import (
	"bufio"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/katatrace/katatrace/endpoint"
	"github.com/katatrace/katatrace/guestid"
	"golang.org/x/net/ipv4"
)

// Sink takes whole datagrams from the host relay.
type Sink interface {
	// Send hands one whole datagram on. p is valid only during the call;
	// from names the guest and connection it came over. Send may be
	// called concurrently.
	Send(p []byte, from guestid.ID) error
	// Flush returns once everything sent so far has been handed on, or
	// ctx ends.
	Flush(ctx context.Context) error
	// Close flushes, bounded by ctx, and releases the sink; nothing is
	// sent after it.
	Close(ctx context.Context) error
}

// Holder is a Sink that holds datagrams until its endpoint accepts them
// (the collector and OTLP sinks), and can say so for one guest.
type Holder interface {
	Sink
	// FlushGuest waits until the endpoint took every datagram the guest
	// sent so far (accepted, or lost), or ctx ends. It returns how many of
	// them it still holds, and how many of the guest's it lost in all
	// (dropped or refused).
	FlushGuest(ctx context.Context, guest string) (held int, lost uint64, err error)
	// Lost is the guest's count of lost datagrams, as FlushGuest gives it.
	Lost(guest string) uint64
}

// Handing is a Sink that can hand what it has not delivered to the next
// process of its unit, and take what a predecessor handed it.
type Handing interface {
	// Handover stops the sink, after letting its endpoint take what it
	// will within ctx, and returns what it still holds.
	Handover(ctx context.Context) []HeldBatch
	// Adopt takes a predecessor's held batches, for the same endpoint.
	Adopt([]HeldBatch)
}

// Reopener is a Sink that can open its output again (at SIGHUP).
type Reopener interface {
	Reopen() error
}

// Inner is the sink at the end of s's chain: wrappers that change what
// they are given (the Kata span decoder) have an Unwrap method.
func Inner(s Sink) Sink {
	for {
		w, ok := s.(interface{ Unwrap() Sink })
		if !ok {
			return s
		}
		s = w.Unwrap()
	}
}

// BatchSink is a Sink that can take several datagrams in one call (one
// sendmmsg); the host relay uses it when frames arrive faster than one read
// at a time. SendBatch hands on every datagram it can and reports how many
// it could not.
type BatchSink interface {
	Sink
	SendBatch(ps [][]byte, from guestid.ID) (failed int, err error)
}

// eachSink makes any Sink a BatchSink, one Send per datagram.
type eachSink struct{ Sink }

func (s eachSink) SendBatch(ps [][]byte, from guestid.ID) (int, error) {
	return sendEach(s.Sink, ps, from)
}

// sendEach sends ps one by one; the error is the first failure's (a
// batch's failures are usually one cause, and a log line must stay short).
func sendEach(s Sink, ps [][]byte, from guestid.ID) (failed int, err error) {
	for _, p := range ps {
		if e := s.Send(p, from); e != nil {
			failed++
			err = cmp.Or(err, e)
		}
	}
	if failed > 1 {
		err = fmt.Errorf("%w (and %d more)", err, failed-1)
	}
	return failed, err
}

// AsBatchSink is s as a BatchSink: itself, or one Send per datagram.
func AsBatchSink(s Sink) BatchSink {
	if bs, ok := s.(BatchSink); ok {
		return bs
	}
	return eachSink{s}
}

// maxBatch bounds what one sendmmsg carries.
const maxBatch = 64

// PacketSink sends each datagram as one datagram to a udp:// or unixgram://
// address: the host side of the Jaeger relay. Batches to UDP go out in one
// sendmmsg.
type PacketSink struct {
	cur    atomic.Pointer[packetConn] // Reopen replaces it
	addr   endpoint.Addr
	target string
	msgs   sync.Pool // of *[]ipv4.Message
	// unseen counts datagrams sent while nothing listened: UDP says so
	// only by the next send's ECONNREFUSED (the port's ICMP answer), so
	// each such error stands for one earlier datagram lost.
	unseen atomic.Uint64
}

// Unseen returns how many datagrams went to a closed port, as the errors
// of later sends revealed: handed on, but not received.
func (s *PacketSink) Unseen() uint64 { return s.unseen.Load() }

// note counts what a send error reveals.
func (s *PacketSink) note(err error) {
	if errors.Is(err, syscall.ECONNREFUSED) {
		s.unseen.Add(1)
	}
}

// packetConn is a PacketSink's socket.
type packetConn struct {
	conn  net.Conn
	batch *ipv4.PacketConn // nil unless UDP
}

func dialPacketConn(a endpoint.Addr) (*packetConn, error) {
	c, err := endpoint.DialPacket(a)
	if err != nil {
		return nil, err
	}
	pc := &packetConn{conn: c}
	if uc, ok := c.(*net.UDPConn); ok {
		pc.batch = ipv4.NewPacketConn(uc)
	}
	return pc, nil
}

// DialPacketSink opens a datagram socket towards a.
func DialPacketSink(a endpoint.Addr) (*PacketSink, error) {
	pc, err := dialPacketConn(a)
	if err != nil {
		return nil, err
	}
	s := &PacketSink{addr: a, target: a.String()}
	s.cur.Store(pc)
	s.msgs.New = func() any { m := make([]ipv4.Message, maxBatch); return &m }
	return s, nil
}

// Reopen opens a new socket towards the address (a syslog socket made
// again, a name that now resolves elsewhere); the old one is closed once
// the sends under way are done with it. On error the old one stays.
func (s *PacketSink) Reopen() error {
	pc, err := dialPacketConn(s.addr)
	if err != nil {
		return fmt.Errorf("reopen %s: %w", s.target, err)
	}
	old := s.cur.Swap(pc)
	// A send that loaded the old socket may still be writing: let it.
	time.AfterFunc(time.Second, func() { _ = old.conn.Close() })
	return nil
}

// SendBatch writes each of ps as one datagram, in order.
func (s *PacketSink) SendBatch(ps [][]byte, from guestid.ID) (failed int, err error) {
	pc := s.cur.Load()
	if pc.batch == nil {
		return sendEach(s, ps, from)
	}
	mp := s.msgs.Get().(*[]ipv4.Message)
	defer s.msgs.Put(mp)
	for len(ps) > 0 {
		n := min(len(ps), len(*mp))
		ms := (*mp)[:n]
		for i := range ms {
			ms[i].Buffers = ps[i : i+1]
		}
		k, werr := pc.batch.WriteBatch(ms, 0)
		for i := range ms {
			ms[i].Buffers = nil
		}
		switch {
		case werr != nil:
			// The datagram at k failed (a refused port, say): count it, go on.
			err = cmp.Or(err, fmt.Errorf("send to %s: %w", s.target, werr))
			s.note(werr)
			failed++
			k++
		case k < n:
			// sendmmsg stopped at a datagram that failed but, having sent
			// some, dropped its error (and a pending ICMP error with it):
			// send that one alone to learn what happened.
			if e := s.Send(ps[k], from); e != nil {
				err = cmp.Or(err, e)
				failed++
			} else {
				s.unseen.Add(1) // the error was an earlier datagram's
			}
			k++
		}
		ps = ps[max(k, 1):]
	}
	return failed, err
}

// Send writes p as one datagram.
func (s *PacketSink) Send(p []byte, _ guestid.ID) error {
	if _, err := s.cur.Load().conn.Write(p); err != nil {
		s.note(err)
		return fmt.Errorf("send to %s: %w", s.target, err)
	}
	return nil
}

// Flush has nothing to do: a datagram is handed on when Send returns.
func (s *PacketSink) Flush(context.Context) error { return nil }

// Close closes the socket.
func (s *PacketSink) Close(context.Context) error { return s.cur.Load().conn.Close() }

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

// Send writes "connection: message\n".
func (s *LineSink) Send(p []byte, from guestid.ID) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.buf = append(append(s.buf[:0], from.Conn...), ": "...)
	s.buf = append(AppendEscaped(s.buf, p), '\n')
	if _, err := s.w.Write(s.buf); err != nil {
		return err
	}
	// Lines show up at once: a person may be watching.
	return s.w.Flush()
}

// Flush flushes the writer.
func (s *LineSink) Flush(context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Flush()
}

// Close flushes: the writer is the caller's.
func (s *LineSink) Close(ctx context.Context) error { return s.Flush(ctx) }

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
