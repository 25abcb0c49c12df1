package hostrelay

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/katatrace/katatrace/sink"
	"github.com/katatrace/katatrace/wire"
)

// This file holds what the host promises and by when: v2 confirmations,
// flush answers, the sessions' marks, and the stop's deadlines.

// draining reports whether Shutdown has begun.
func (s *Server) draining() bool { return s.drainEnd.Load() != 0 }

// drainDeadline is the read deadline of a connection during the drain: a
// moment of quiet, or the drain's end, whichever comes first; at a
// handover, now.
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
// with it.
const drainIdle = 50 * time.Millisecond

// Shutdown stops accepting and lets every connection hand on what it has
// already received, until it has been quiet a moment. When ctx ends first,
// it closes the connections still sending, cuts their waits for the sink,
// and returns at once with an error wrapping ctx's: a connection stuck in
// a sink that does not return is left to end when the sink is closed. It
// does not flush the sink, which is its owner's to close. Later calls
// drain as the first did.
func (s *Server) Shutdown(ctx context.Context) error {
	end, ok := ctx.Deadline()
	if !ok {
		end = time.Now().Add(time.Minute)
	}
	s.stop(end)
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
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
// accepting, paced connections woken, every read given the drain's
// deadline. Later calls do nothing.
func (s *Server) stop(end time.Time) {
	s.drainOnce.Do(func() {
		s.mu.Lock()
		s.drainEnd.Store(end.UnixNano())
		close(s.drain)
		for ln := range s.listeners {
			_ = ln.Close()
		}
		conns := slices.Collect(maps.Keys(s.conns))
		s.mu.Unlock()
		for _, c := range conns {
			c.dl.Lock()
			_ = c.conn.SetReadDeadline(s.drainDeadline())
			c.dl.Unlock()
		}
	})
}

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
