package hostrelay

import (
	"encoding/hex"
	"errors"
	"os"
	"time"
)

// MessageReader reads one connection as a stream of messages framed its
// own way (a Kata agent's spans; ServerConfig.Messages makes one per
// connection). It never ends the stream for what it cannot return: it
// skips it, and counts it.
type MessageReader interface {
	// Next returns the next message, valid until the next call, or the
	// stream's error; after a read's own (a deadline), Next may be called
	// again and goes on where it was.
	Next() ([]byte, error)
	// OnWait has fn told each time Next begins to wait for the rest of a
	// message it began; Drop gives that up (its rest is skipped as it
	// comes).
	OnWait(fn func())
	Drop() bool
	// Lose makes the reader find the next message first: the stream is
	// taken up at an unknown point (after a crash).
	Lose()
	// Skipped counts what the reader skipped so far.
	Skipped() Skipped
	// State is what a successor's reader needs to go on (Restore).
	State() []byte
	Restore(state []byte) error
	// Close gives back the room the reader holds (Memory).
	Close()
}

// Skipped counts what a MessageReader did not return: frames above the
// limit, frames given up half-way, times the framing was lost and looked
// for, and every byte of them.
type Skipped struct {
	Oversize, Stalled, Resyncs, Bytes uint64
}

// messages serves a message stream: every message is handed on as it
// comes, one that the sink cannot read at all (sink.ErrMalformed) is
// skipped and counted, and nothing the peer sends is a reason to close
// its connection: its own close, and the process's end without a store
// to hand it to, are the only ends.
func (c *peerConn) messages(mr MessageReader) error {
	defer mr.Close()
	var seen Skipped // what the reader counted before (a resync begun at adoption) is noted too
	// A message begun must come whole in time; one that does not is
	// dropped (its memory let go) and its rest skipped.
	mr.OnWait(func() {
		c.setDeadline(time.Now().Add(c.srv.cfg.FrameTimeout))
		c.frameDeadline = true
	})
	for {
		p, err := mr.Next()
		if c.frameDeadline && !errors.Is(err, os.ErrDeadlineExceeded) {
			c.setDeadline(time.Time{}) // between messages, a peer may be quiet as long as it likes
			c.frameDeadline = false
		}
		if !c.greeted && (err == nil || mr.Skipped().Bytes > 0) {
			c.greeted = true
			c.g.greeted.Store(true)
			c.srv.log.Info("agent connected", c.named("peer", c.peer, "guest", c.g.name)...)
		}
		seen = c.noteSkipped(mr.Skipped(), seen)
		switch {
		case err == nil:
			c.batch = append(c.batch, p)
			c.pace(c.flushBatch())
			continue
		case errors.Is(err, os.ErrDeadlineExceeded) && c.srv.draining():
			// Handover sets its flag before the drain: a drain seen here
			// is told apart from a handover without a race.
			if c.srv.handingOver() && c.keep(nil, mr.State()) {
				return errHandedOver
			}
			return err
		case errors.Is(err, os.ErrDeadlineExceeded):
			if mr.Drop() {
				seen = c.noteSkipped(mr.Skipped(), seen)
			}
			c.setDeadline(time.Time{})
			c.frameDeadline = false
			continue
		}
		return err
	}
}

// noteSkipped counts what the reader skipped since seen, and says so, at
// most once a minute per guest.
func (c *peerConn) noteSkipped(now, seen Skipped) Skipped {
	if now == seen {
		return now
	}
	d := Skipped{now.Oversize - seen.Oversize, now.Stalled - seen.Stalled, now.Resyncs - seen.Resyncs, now.Bytes - seen.Bytes}
	for _, t := range []*traffic{&c.srv.stats.traffic, &c.g.traffic} {
		t.oversize.Add(d.Oversize)
		t.stalled.Add(d.Stalled)
		t.resyncs.Add(d.Resyncs)
		t.skippedBytes.Add(d.Bytes)
	}
	c.skipped.Skipped = now
	var what string
	switch {
	case d.Resyncs > 0:
		what = "stream lost its framing (a length no span could have, or taken up after a crash): skipping to the next frame"
	case d.Oversize > 0:
		what = "frame above --max-span-bytes: read through and thrown away"
	case d.Stalled > 0:
		what = "frame not finished within --frame-timeout: dropped, its rest skipped as it comes"
	}
	if what != "" {
		if ok, n := c.g.skipLog.Allow(); ok {
			c.srv.log.Warn(c.srv.PeerWord()+"'s "+what, c.named("guest", c.g.name, "peer", c.peer,
				"skipped_frames_total", c.g.skippedFrames(), "skipped_bytes_total", c.g.skippedBytes.Load(), "not_logged", n)...)
		}
	}
	return now
}

// undecodable counts n messages of this connection that the sink could
// not read at all (the first of them p), skipped; logged with the first
// bytes at most once a minute per guest.
func (c *peerConn) undecodable(n int, err error, p []byte) {
	c.srv.stats.undecodable.Add(uint64(n))
	c.g.undecodable.Add(uint64(n))
	c.skipped.undecodable += uint64(n)
	if ok, suppressed := c.g.undecodableLog.Allow(); ok {
		c.srv.log.Warn("frame that is no span skipped; the "+c.srv.PeerWord()+"'s next frames are read on", c.named("guest", c.g.name, "peer", c.peer,
			"err", err, "bytes", len(p), "first_bytes", hex.EncodeToString(p[:min(len(p), 32)]),
			"undecodable_total", c.g.undecodable.Load(), "not_logged", suppressed)...)
	}
}
