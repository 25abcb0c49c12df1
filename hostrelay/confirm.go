package hostrelay

import (
	"context"
	"fmt"
	"maps"
	"net"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/katatrace/katatrace/endpoint"
	"github.com/katatrace/katatrace/sink"
	"github.com/katatrace/katatrace/wire"
)

// This file holds what the host promises and by when: v2 confirmations,
// flush answers and the sessions' marks; then the stop: what it reads,
// and how its bound is shared.
//
// A confirmation says "handed to the sink", not "accepted by the sink's
// endpoint": the host, not the guest, holds what a slow or absent
// endpoint has not taken (its queue, --queue-bytes), so that a guest's
// small queue, in the guest's memory, never waits on a collector. The
// host keeps that word at a stop: it reads only what was waiting, gives
// the sink its own share of the bound to deliver, hands what is left to
// a successor where it has one, and otherwise says, per guest, what it
// lost (docs/protocol.md, "Confirmation").

// confirmBytes and confirmEvery bound what a v2 guest's stream carries
// unconfirmed while it keeps coming: a quarter of a guest's default queue,
// and a tenth of the time a guest waits for room before it takes the host
// as stalled.
const (
	confirmBytes = 1 << 20
	confirmEvery = 10 * time.Millisecond
	// confirmDelay is how long after catching up with a guest's stream its
	// confirmation waits for more to come: short, since a host killed
	// meanwhile hands what it did not confirm on twice after its restart.
	confirmDelay = 2 * time.Millisecond
)

var flushAnswer = wire.AppendFrame(nil, nil)

// flushSink waits, bounded by FlushTimeout, for the sink to hand on
// everything of this guest's, and returns the answer to the guest's flush:
// how many of its datagrams the sink's endpoint has not accepted (held
// for retrying, or lost since the last answer). A v1 guest cannot be told:
// its answer is bare, and the log says what it was not told.
func (c *peerConn) flushSink() []byte {
	ctx, cancel := context.WithTimeout(c.srv.life, c.srv.cfg.FlushTimeout)
	defer cancel()
	var held int
	var lost uint64
	var err error
	if h, ok := sink.Inner(c.srv.cfg.Sink).(sink.Holder); ok {
		held, lost, err = h.FlushGuest(ctx, c.id.Guest)
	} else {
		err = c.srv.cfg.Sink.Flush(ctx)
	}
	lostNow := lost - min(lost, c.sinkLost)
	c.sinkLost = max(c.sinkLost, lost)
	notAccepted := uint64(held) + lostNow
	if err == nil && notAccepted == 0 {
		return flushAnswer
	}
	c.srv.stats.flushesNotAccepted.Add(1)
	c.g.flushesNotAccepted.Add(1)
	told := "the guest is told"
	if !c.v2 {
		told = "a v1 guest cannot be told"
	}
	c.srv.log.Warn("flush answered before the sink's endpoint accepted everything of this guest's; "+told,
		"peer", c.peer, "guest", c.g.name, "held", held, "lost_since_last_flush", lostNow, "err", err)
	if !c.v2 {
		return flushAnswer
	}
	return wire.AppendFlushAnswer(c.ackBuf[:0], notAccepted)
}

// ack confirms to a v2 guest every datagram numbered below c.seq: handed
// on, or counted as dropped (refused by the sink) or as a
// duplicate; once any was dropped, it tells the guest how many. The
// session remembers both, so that what the guest resends after a
// reconnect is not handed on twice.
func (c *peerConn) ack() error {
	c.ackBy = time.Time{}
	if !c.owesAck() {
		return nil
	}
	c.delivered = max(c.delivered, c.seq)
	c.srv.sessions.set(c.session, mark{c.delivered, c.lost})
	if err := c.write(wire.AppendAck(c.ackBuf[:0], c.seq, c.lost)); err != nil {
		return fmt.Errorf("confirm datagrams: %w", err)
	}
	c.acked, c.ackedLost, c.unconfirmed, c.ackedAt = c.seq, c.lost, 0, time.Now()
	return nil
}

// owesAck reports whether a v2 guest has datagrams to be confirmed.
func (c *peerConn) owesAck() bool {
	return c.v2 && (c.seq != c.acked || c.lost != c.ackedLost)
}

// sessions remembers, per v2 guest session, the number below which every
// datagram was handed on (or counted), and how many of those were dropped.
// It is bounded: past maxSessions an arbitrary entry is forgotten (its
// guest can at worst see resends handed on twice).
type sessions struct {
	mu sync.Mutex
	m  map[uint64]mark
}

// mark is a session's confirmed position and its count of dropped.
type mark struct{ delivered, lost uint64 }

const maxSessions = 1 << 16

func (s *sessions) get(id uint64) mark {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.m[id]
}

func (s *sessions) snapshot() map[uint64]mark {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.m)
}

func (s *sessions) set(id uint64, m mark) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m == nil {
		s.m = map[uint64]mark{}
	}
	if _, ok := s.m[id]; !ok && len(s.m) >= maxSessions {
		for k := range s.m {
			delete(s.m, k)
			break
		}
	}
	old := s.m[id]
	s.m[id] = mark{max(old.delivered, m.delivered), max(old.lost, m.lost)}
}

// draining reports whether a stop (Shutdown, or Handover) has begun.
func (s *Server) draining() bool { return s.drainEnd.Load() != 0 }

// drainDeadline is the read deadline of a connection during the drain: a
// moment of quiet, or the drain's end, whichever comes first; at a
// handover, now. A connection whose waiting bytes the stop counted ends
// at their end (stopConn); the quiet is for one whose transport cannot
// count them.
func (s *Server) drainDeadline() time.Time {
	if s.handingOver() {
		return time.Now()
	}
	end, quiet := time.Unix(0, s.drainEnd.Load()), time.Now().Add(drainIdle)
	if quiet.Before(end) {
		return quiet
	}
	return end
}

// drainIdle is how long a guest must stay quiet for the drain to be done
// with it, where what was waiting cannot be counted.
const drainIdle = 50 * time.Millisecond

// Shutdown stops accepting and lets every connection hand on what was
// already waiting for it when the stop began (the kernel's count of it;
// where the transport cannot count, until the guest is quiet a moment),
// then closes it: what a guest sends after the stop began is not read (a
// v2 guest sends it again to the next host). It returns nil once every
// connection and Serve loop has ended. When ctx ends first, it closes the connections
// still busy, cuts their waits for the sink, and returns at once with an
// error wrapping ctx's: a connection stuck in a sink that does not return
// is left to end when the sink is closed. It does not flush the sink,
// which is its owner's to close (Host gives the sink its share of the
// stop). Later calls drain as the first did; none leaves anything running.
func (s *Server) Shutdown(ctx context.Context) error {
	end, ok := ctx.Deadline()
	if !ok {
		end = time.Now().Add(time.Minute)
	}
	s.stop(end)
	select {
	case <-s.idle:
		return nil
	case <-ctx.Done():
	}
	s.endLife()
	s.mu.Lock()
	n := len(s.conns)
	for c := range s.conns {
		_ = c.conn.Close()
	}
	s.mu.Unlock()
	return fmt.Errorf("drain cut short with %d connections still open: %w", n, context.Cause(ctx))
}

// stop begins a drain ending at end (a handover's: at once): no more
// accepting, paced connections woken, what is waiting on each connection
// counted (not at a handover, which reads nothing more), every read given
// the drain's deadline. Later calls do nothing.
func (s *Server) stop(end time.Time) {
	s.drainOnce.Do(func() {
		s.mu.Lock()
		s.drainEnd.Store(end.UnixNano())
		close(s.drain)
		for ln := range s.listeners {
			_ = ln.Close()
		}
		conns := slices.Collect(maps.Keys(s.conns))
		s.settle()
		s.mu.Unlock()
		handover := s.handingOver()
		for _, c := range conns {
			c.dl.Lock()
			dl := s.drainDeadline()
			if !handover && c.sc.limit() == 0 {
				dl = time.Now() // nothing waiting: a read blocked now ends
			}
			_ = c.conn.SetReadDeadline(dl)
			c.dl.Unlock()
		}
	})
}

// settle closes s.idle once a stop has begun and nothing of the server
// runs any more: no connection, no Serve loop; s.mu is held. Shutdown and
// Handover wait on it, so that neither leaves a goroutine behind however
// often it is called while a connection is stuck in the sink.
func (s *Server) settle() {
	if s.draining() && len(s.conns) == 0 && s.serves == 0 && !s.idleClosed {
		s.idleClosed = true
		close(s.idle)
	}
}

// stopConn is a guest's connection as the server reads it. Once a stop
// has counted what was waiting (limit), reads go on through those bytes
// only, then fail as the drain's deadline does: what the guest sends
// after the stop began stays unread, and the stop does not wait for a
// guest that never pauses.
type stopConn struct {
	net.Conn
	// left is what the stop still lets be read; -1: no limit (no stop
	// yet, or the transport cannot count).
	left atomic.Int64
}

func newStopConn(c net.Conn) *stopConn {
	sc := &stopConn{Conn: c}
	sc.left.Store(-1)
	return sc
}

// NetConn is the connection itself: the store and endpoint's socket
// options look through the wrapper.
func (c *stopConn) NetConn() net.Conn { return c.Conn }

// limit counts what is waiting as the stop begins, and lets reading go on
// through it only; it returns the count, or -1 where the transport
// cannot count (reading then goes on until the guest is quiet a moment).
func (c *stopConn) limit() int64 {
	n, ok := endpoint.Waiting(c.Conn)
	if !ok {
		return -1
	}
	c.left.Store(int64(n))
	return int64(n)
}

func (c *stopConn) Read(p []byte) (int, error) {
	left := c.left.Load()
	switch {
	case left == 0:
		return 0, os.ErrDeadlineExceeded
	case left > 0 && int64(len(p)) > left:
		p = p[:left]
	}
	n, err := c.Conn.Read(p)
	if left > 0 {
		// Only this reader lowers it once the stop set it. A read under
		// way as the stop counted is not taken off: it may have read past
		// what was counted (by that read's bytes at most), never short.
		c.left.Store(max(0, left-int64(n)))
	}
	return n, err
}

// shares are the deadlines of one stop: what was waiting is read, and
// flushes answered, until read; the sink's endpoint takes what it holds
// until sink; by end, the bound, the sink has said what it lost and a
// successor has stored the handed state.
type shares struct{ read, sink, end time.Time }

// stopShares shares a stop's bound from start: reading gets at most half
// (it is quick, unless the sink blocks or a flush waits for the endpoint:
// never the sink's own time), the sink what reading leaves, less a tenth
// (at most 100 ms) kept for the end.
func stopShares(start time.Time, bound time.Duration) shares {
	end := start.Add(bound)
	return shares{read: start.Add(bound / 2), sink: end.Add(-min(bound/10, 100*time.Millisecond)), end: end}
}
