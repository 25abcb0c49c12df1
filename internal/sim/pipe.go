package sim

import (
	"context"
	"hash/fnv"
	"io"
	"net"
	"os"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// The simulation's network: buffered in-memory streams with deadlines,
// listeners and dialing by address. Every wait is on a channel or timer
// of the bubble, so a goroutine blocked here is durably blocked and
// virtual time moves on (net.Pipe has no buffer, and real sockets do not
// block durably).

// stream is one direction of a connection: what the writing end wrote
// waits in a bounded buffer until the reading end reads it.
type stream struct {
	mu      sync.Mutex
	wake    chan struct{} // closed and replaced at a change that someone waits for
	waiting int
	data    []byte // buffered: data[off:]
	off     int
	size    int   // the buffer's bound
	wrote   int64 // bytes taken from the writer, in all
	// Faults drawn for the connection: once wrote reaches cutAt the
	// connection breaks (bytes up to it still arrive, unless the cut
	// discards what is buffered); once it passes stallAt, nothing is
	// readable for stallFor. -1: none.
	cutAt, stallAt int64
	stallFor       time.Duration
	corruptAt      int64 // a byte flipped there (sabotage); 0: none
	stalledUntil   time.Time
	rdl, wdl       time.Time
	readerClosed   bool  // the reading end closed: writes fail (EPIPE)
	writerClosed   bool  // the writing end closed: reads end (EOF) once drained
	broken         error // the connection was cut: both ends fail
	// tap sees, in order, what the reading end read; it runs on the
	// reader's goroutine (one reader per stream).
	tap  func([]byte)
	pipe *pipe
}

func newStream(p *pipe, size int) *stream {
	return &stream{wake: make(chan struct{}), size: size, cutAt: -1, stallAt: -1, pipe: p}
}

// signal wakes every waiter; s.mu is held.
func (s *stream) signal() {
	if s.waiting > 0 {
		close(s.wake)
		s.wake = make(chan struct{})
	}
}

// wait waits, s.mu held, until signalled or until (if set); s.mu is
// held again when it returns.
func (s *stream) wait(until time.Time) {
	wake := s.wake
	s.waiting++
	s.mu.Unlock()
	waitFor(wake, until)
	s.mu.Lock()
	s.waiting--
}

func (s *stream) buffered() int { return len(s.data) - s.off }

// waitFor waits for ch or, if until is set, until then.
func waitFor(ch <-chan struct{}, until time.Time) {
	if until.IsZero() {
		<-ch
		return
	}
	t := time.NewTimer(time.Until(until))
	defer t.Stop()
	select {
	case <-ch:
	case <-t.C:
	}
}

func opErr(op string, err error) error { return &net.OpError{Op: op, Net: "sim", Err: err} }

// passed reports whether deadline d is set and not in the future: a
// deadline in the past fails an operation even where data waits, as the
// kernel's sockets do (guestrelay counts on it).
func passed(d time.Time) bool { return !d.IsZero() && !time.Now().Before(d) }

func (s *stream) read(b []byte) (int, error) {
	for {
		s.mu.Lock()
		if s.readerClosed {
			s.mu.Unlock()
			return 0, opErr("read", net.ErrClosed)
		}
		if passed(s.rdl) {
			s.mu.Unlock()
			return 0, os.ErrDeadlineExceeded
		}
		stalled := time.Now().Before(s.stalledUntil)
		if s.buffered() > 0 && !stalled {
			n := copy(b, s.data[s.off:])
			s.off += n
			if s.off == len(s.data) {
				s.data, s.off = s.data[:0], 0
			}
			tap := s.tap
			s.signal()
			s.mu.Unlock()
			if tap != nil && n > 0 {
				tap(b[:n])
			}
			return n, nil
		}
		if s.buffered() == 0 {
			switch {
			case s.broken != nil:
				s.mu.Unlock()
				return 0, s.broken
			case s.writerClosed:
				s.mu.Unlock()
				return 0, io.EOF
			}
		}
		until := s.rdl
		if stalled && (until.IsZero() || s.stalledUntil.Before(until)) {
			until = s.stalledUntil
		}
		s.wait(until)
		s.mu.Unlock()
	}
}

func (s *stream) write(b []byte) (n int, err error) {
	for {
		s.mu.Lock()
		switch {
		case s.writerClosed:
			err = opErr("write", net.ErrClosed)
		case s.broken != nil:
			err = s.broken
		case s.readerClosed:
			err = opErr("write", syscall.EPIPE)
		case passed(s.wdl):
			err = os.ErrDeadlineExceeded
		}
		if err != nil || n == len(b) {
			s.mu.Unlock()
			return n, err
		}
		if room := s.size - s.buffered(); room > 0 {
			k, cut := min(room, len(b)-n), false
			if s.cutAt >= 0 && s.wrote+int64(k) >= s.cutAt {
				k, cut = int(s.cutAt-s.wrote), true
			}
			if s.stallAt >= 0 && s.wrote+int64(k) > s.stallAt {
				s.stalledUntil = time.Now().Add(s.stallFor)
				s.stallAt = -1
				s.pipe.faulted("stall", s.stallFor)
			}
			if s.off > 0 && len(s.data)+k > cap(s.data) {
				s.data, s.off = s.data[:copy(s.data, s.data[s.off:])], 0
			}
			s.data = append(s.data, b[n:n+k]...)
			if s.corruptAt > s.wrote && s.corruptAt <= s.wrote+int64(k) {
				s.data[len(s.data)-int(s.wrote+int64(k)-s.corruptAt)] ^= 0x40
			}
			s.wrote += int64(k)
			n += k
			s.signal()
			s.mu.Unlock()
			if cut {
				s.pipe.cut(false, "cut at a byte")
				return n, s.pipe.reset
			}
			continue
		}
		s.wait(s.wdl)
		s.mu.Unlock()
	}
}

func (s *stream) set(f func()) {
	s.mu.Lock()
	f()
	s.signal()
	s.mu.Unlock()
}

// pipe is a connection: up carries what the dialing side (a guest) writes,
// down what the accepting side (the host) writes.
type pipe struct {
	id       int
	key      uint64 // what its faults are drawn by (connKey)
	up, down *stream
	reset    error
	// onFault hears of each fault as it happens (cuts, stalls).
	onFault func(p *pipe, what string, d time.Duration)
	once    sync.Once
}

func newPipe(id, size int) *pipe {
	p := &pipe{id: id, reset: opErr("read", syscall.ECONNRESET)}
	p.up, p.down = newStream(p, size), newStream(p, size)
	return p
}

func (p *pipe) faulted(what string, d time.Duration) {
	if p.onFault != nil {
		p.onFault(p, what, d)
	}
}

// cut breaks the connection: every read and write of both ends fails
// with a reset once what is buffered is read (discard: at once, the
// buffered bytes lost, as a TCP reset drops them).
func (p *pipe) cut(discard bool, why string) {
	first := false
	p.once.Do(func() { first = true })
	for _, s := range []*stream{p.up, p.down} {
		s.set(func() {
			if s.broken == nil {
				s.broken = p.reset
			}
			s.stalledUntil = time.Time{}
			if discard {
				s.data, s.off = s.data[:0], 0
			}
		})
	}
	if first {
		p.faulted(why, 0)
	}
}

// closed reports whether either end closed.
func (p *pipe) closed() bool {
	for _, s := range []*stream{p.up, p.down} {
		s.mu.Lock()
		c := s.writerClosed || s.readerClosed
		s.mu.Unlock()
		if c {
			return true
		}
	}
	return false
}

// end is one end of a pipe, a net.Conn.
type end struct {
	in, out       *stream
	local, remote addr
	closeOnce     sync.Once
}

func (e *end) Read(b []byte) (int, error)  { return e.in.read(b) }
func (e *end) Write(b []byte) (int, error) { return e.out.write(b) }
func (e *end) Close() error {
	e.closeOnce.Do(func() {
		e.in.set(func() { e.in.readerClosed = true })
		e.out.set(func() { e.out.writerClosed = true })
	})
	return nil
}
func (e *end) LocalAddr() net.Addr  { return e.local }
func (e *end) RemoteAddr() net.Addr { return e.remote }
func (e *end) SetDeadline(t time.Time) error {
	_ = e.SetReadDeadline(t)
	return e.SetWriteDeadline(t)
}
func (e *end) SetReadDeadline(t time.Time) error {
	e.in.set(func() { e.in.rdl = t })
	return nil
}
func (e *end) SetWriteDeadline(t time.Time) error {
	e.out.set(func() { e.out.wdl = t })
	return nil
}

// addr is a simulated address. A guest's is "NAME:N", so that the host
// names the guest NAME (guestid takes a peer's host part) and the
// connection NAME:N.
type addr string

func (a addr) Network() string { return "sim" }
func (a addr) String() string  { return string(a) }

// network holds the listeners by address.
type network struct {
	mu        sync.Mutex
	listeners map[addr]*listener
	pipes     []*pipe
	dials     map[string]uint64
	// open makes the pipe of the n-th connection (its buffer, faults and
	// taps), whose faults are drawn by key; from and to name its ends.
	open func(n int, key uint64, from, to addr) *pipe
}

// connKey keys a connection's faults by its guest and that guest's own
// count of dials, not by the order all guests dialled in (which Go's
// scheduling may change between runs of a seed).
func connKey(from string, dial uint64) uint64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte(from))
	return h.Sum64() ^ dial*0x9e3779b97f4a7c15
}

// errRefused is a dial to an address where nothing listens.
var errRefused = opErr("dial", syscall.ECONNREFUSED)

func (n *network) listen(a addr) (*listener, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if l := n.listeners[a]; l != nil {
		return nil, opErr("listen", syscall.EADDRINUSE)
	}
	l := &listener{net: n, addr: a, wake: make(chan struct{})}
	n.listeners[a] = l
	return l, nil
}

// dial connects from (a guest's name) to the listener at to; the
// connection waits in its backlog until accepted, as a socket's does.
func (n *network) dial(_ context.Context, from string, to addr) (net.Conn, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	l := n.listeners[to]
	if l == nil {
		return nil, errRefused
	}
	id := len(n.pipes)
	if n.dials == nil {
		n.dials = map[string]uint64{}
	}
	key := connKey(from, n.dials[from])
	n.dials[from]++
	remote := addr(from + ":" + strconv.Itoa(id))
	p := n.open(id, key, remote, to)
	n.pipes = append(n.pipes, p)
	client := &end{in: p.down, out: p.up, local: remote, remote: to}
	server := &end{in: p.up, out: p.down, local: to, remote: remote}
	if !l.enqueue(server) {
		return nil, errRefused
	}
	return client, nil
}

// all lists every connection made.
func (n *network) all() []*pipe {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]*pipe(nil), n.pipes...)
}

type listener struct {
	net     *network
	addr    addr
	mu      sync.Mutex
	wake    chan struct{}
	backlog []*end
	closed  bool
}

// maxBacklog is a listener's backlog: a dial beyond it is refused.
const maxBacklog = 64

func (l *listener) enqueue(e *end) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed || len(l.backlog) >= maxBacklog {
		return false
	}
	l.backlog = append(l.backlog, e)
	close(l.wake)
	l.wake = make(chan struct{})
	return true
}

func (l *listener) Accept() (net.Conn, error) {
	for {
		l.mu.Lock()
		if l.closed {
			l.mu.Unlock()
			return nil, opErr("accept", net.ErrClosed)
		}
		if len(l.backlog) > 0 {
			e := l.backlog[0]
			l.backlog = l.backlog[1:]
			l.mu.Unlock()
			return e, nil
		}
		wake := l.wake
		l.mu.Unlock()
		<-wake
	}
}

// Close stops listening: connections still in the backlog are closed
// (their guests see the stream end), and the address is free again.
func (l *listener) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	pending := l.backlog
	l.backlog = nil
	close(l.wake)
	l.wake = make(chan struct{})
	l.mu.Unlock()
	for _, e := range pending {
		_ = e.Close()
	}
	l.net.mu.Lock()
	if l.net.listeners[l.addr] == l {
		delete(l.net.listeners, l.addr)
	}
	l.net.mu.Unlock()
	return nil
}

func (l *listener) Addr() net.Addr { return l.addr }
