package sim

import (
	"errors"
	"net"
	"os"
	"sync"
	"time"
)

// packetSource is the guest relay's datagram socket, in memory: a client
// offers datagrams, which wait (a bounded number, as in a socket's
// buffer; beyond it the "kernel" drops them, counted here) until the
// relay reads them. It records every datagram read, in order.
type packetSource struct {
	mu      sync.Mutex
	wake    chan struct{}
	waiting int
	q       [][]byte
	slots   int // the socket buffer, in datagrams
	closed  bool
	rdl     time.Time
	local   addr
	// dropped counts what the socket had no room for, discarded what
	// was still in it when it closed; read the
	// datagrams read, in order (their ids); settled how many of them the
	// relay has queued: all read before its latest Read began (it reads,
	// queues, and comes back).
	dropped, discarded int
	read               []uint64
	settled            int
	// miscount records every tenth datagram read twice (a sabotage).
	miscount bool
}

func newPacketSource(name string, slots int) *packetSource {
	return &packetSource{wake: make(chan struct{}), slots: slots, local: addr(name)}
}

func (s *packetSource) signal() {
	if s.waiting > 0 {
		close(s.wake)
		s.wake = make(chan struct{})
	}
}

// offer is a client's send: false when the socket is closed or full.
// The socket owns p (see release).
func (s *packetSource) offer(p []byte) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		release(p)
		return false
	}
	if len(s.q) >= s.slots {
		s.dropped++
		release(p)
		return false
	}
	s.q = append(s.q, p)
	s.signal()
	return true
}

// snapshot returns the ids the relay has queued so far.
func (s *packetSource) snapshot() []uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.read[:s.settled:s.settled]
}

func (s *packetSource) Read(b []byte) (int, error) {
	s.mu.Lock()
	s.settled = len(s.read)
	for {
		if s.closed {
			s.mu.Unlock()
			return 0, opErr("read", net.ErrClosed)
		}
		if passed(s.rdl) {
			s.mu.Unlock()
			return 0, os.ErrDeadlineExceeded
		}
		if len(s.q) > 0 {
			p := s.q[0]
			s.q[0] = nil
			s.q = s.q[1:]
			s.read = append(s.read, idOf(p))
			if s.miscount && len(s.read)%10 == 0 {
				s.read = append(s.read, idOf(p))
			}
			s.mu.Unlock()
			n := copy(b, p) // a datagram larger than b is cut, as UDP does
			release(p)
			return n, nil
		}
		wake, until := s.wake, s.rdl
		s.waiting++
		s.mu.Unlock()
		waitFor(wake, until)
		s.mu.Lock()
		s.waiting--
	}
}

func (s *packetSource) ReadFrom(b []byte) (int, net.Addr, error) {
	n, err := s.Read(b)
	return n, addr("client"), err
}

func (s *packetSource) WriteTo([]byte, net.Addr) (int, error) {
	return 0, errors.New("the simulated datagram socket only reads")
}

func (s *packetSource) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	s.discarded += len(s.q)
	for _, p := range s.q {
		release(p)
	}
	s.q = nil
	s.signal()
	return nil
}

func (s *packetSource) LocalAddr() net.Addr { return s.local }

func (s *packetSource) SetDeadline(t time.Time) error { return s.SetReadDeadline(t) }

func (s *packetSource) SetReadDeadline(t time.Time) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rdl = t
	s.signal()
	return nil
}

func (s *packetSource) SetWriteDeadline(time.Time) error { return nil }
