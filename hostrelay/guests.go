package hostrelay

import (
	"sort"
	"sync/atomic"
	"time"

	"github.com/katatrace/katatrace/hold"
	"github.com/katatrace/katatrace/internal/lograte"
	"github.com/katatrace/katatrace/wire"
)

// A guest is one VM as the host relay sees it (see guestOf): its open
// connections, its budget and its counters. Every connection of a guest
// shares them, so that a VM cannot multiply its share by connecting more.
type guest struct {
	name  string
	conns int       // open connections; Server.mu
	gone  time.Time // when the last connection closed; Server.mu

	budget budget
	// share is the guest's room for frames still arriving.
	share *hold.Share
	// Pacing, drop, skip and undecodable-frame warnings, per guest.
	log, dropLog, skipLog, undecodableLog *lograte.Every
	// sandbox is the Kata sandbox ID, where the host can know it (see
	// package sandboxid), found again as the guest connects after a quiet
	// spell (a CID may be another VM's by then).
	sandbox atomic.Pointer[string]
	// greeted is set once a connection of the guest sent a hello or bytes:
	// a probe that connects and closes (another relay checking the socket)
	// is no VM, and is not listed.
	greeted atomic.Bool
	// lastSend is when the guest last had a datagram admitted (Unix ns).
	lastSend atomic.Int64
	traffic
}

// Traffic is what guests did: a Server's totals, or one guest's.
type Traffic struct {
	Accepted  uint64 // connections
	Datagrams uint64 // handed on
	Bytes     uint64
	Flushes   uint64
	// Duplicates are v2 datagrams resent after a reconnect that had been
	// handed on already: dropped, not handed on twice.
	Duplicates uint64
	// SinkErrors are datagrams the sink refused; GuestDropped those the
	// guests' relays dropped (their queues full), as their sequence
	// numbers tell; Paused the time reading waited for budgets.
	SinkErrors, GuestDropped uint64
	Paused                   time.Duration
	// FlushesNotAccepted are flushes answered while the sink's endpoint
	// had not accepted everything of the guest's (the guest is told how
	// much); Unparsed are bytes of raw streams that did not parse, skipped.
	FlushesNotAccepted, Unparsed uint64
	// Message streams (ServerConfig.Messages): Undecodable messages were
	// framed but the sink could not read them; Skipped what the readers
	// skipped. Both are skipped, never a reason to close.
	Undecodable uint64
	Skipped     Skipped
}

// traffic holds the live counters behind Traffic.
type traffic struct {
	accepted, datagrams, bytes, flushes, duplicates, sinkErrors, guestDropped, paused atomic.Uint64
	flushesNotAccepted, unparsed                                                      atomic.Uint64
	undecodable, oversize, stalled, resyncs, skippedBytes                             atomic.Uint64
}

func (t *traffic) snapshot() Traffic {
	return Traffic{Accepted: t.accepted.Load(), Datagrams: t.datagrams.Load(), Bytes: t.bytes.Load(),
		Flushes: t.flushes.Load(), Duplicates: t.duplicates.Load(), SinkErrors: t.sinkErrors.Load(),
		GuestDropped: t.guestDropped.Load(), Paused: time.Duration(t.paused.Load()),
		FlushesNotAccepted: t.flushesNotAccepted.Load(), Unparsed: t.unparsed.Load(),
		Undecodable: t.undecodable.Load(),
		Skipped:     Skipped{Oversize: t.oversize.Load(), Stalled: t.stalled.Load(), Resyncs: t.resyncs.Load(), Bytes: t.skippedBytes.Load()}}
}

// skippedFrames counts the frames skipped, for whatever reason.
func (t *traffic) skippedFrames() uint64 {
	return t.undecodable.Load() + t.oversize.Load() + t.stalled.Load()
}

// GuestStats is what one guest has done; see Server.Guests.
type GuestStats struct {
	Guest       string
	Sandbox     string // the Kata sandbox ID, if known
	Connections int    // open now
	Held        int64  // memory held for its frames still arriving
	Traffic
}

// sandboxID is the guest's sandbox ID, or "".
func (g *guest) sandboxID() string {
	if p := g.sandbox.Load(); p != nil {
		return *p
	}
	return ""
}

// guestKeep is how long a guest's counters outlive its last connection,
// so that a scrape still sees what it did; maxGuests bounds how many are
// kept (the oldest gone are forgotten first).
const (
	guestKeep = 10 * time.Minute
	maxGuests = 1 << 14
)

// guestFor returns the guest named name, making it if new; s.mu is held.
func (s *Server) guestFor(name string) *guest {
	if g := s.guests[name]; g != nil {
		return g
	}
	if len(s.guests) >= maxGuests {
		s.forgetGuests(time.Now())
	}
	g := &guest{name: name, log: lograte.NewEvery(10 * time.Second), dropLog: lograte.NewEvery(10 * time.Second),
		skipLog: lograte.NewEvery(time.Minute), undecodableLog: lograte.NewEvery(time.Minute)}
	g.budget.init(s.cfg.GuestRate, s.cfg.GuestBurst)
	g.share = s.room.Share()
	s.guests[name] = g
	return g
}

// forgetGuests drops guests gone longer than guestKeep, or, when too many
// are kept, the longest gone; s.mu is held.
func (s *Server) forgetGuests(now time.Time) {
	var gone []*guest
	for name, g := range s.guests {
		switch {
		case g.conns > 0:
		case now.Sub(g.gone) > guestKeep:
			delete(s.guests, name)
		default:
			gone = append(gone, g)
		}
	}
	if extra := len(s.guests) - maxGuests + 1; extra > 0 {
		sort.Slice(gone, func(i, j int) bool { return gone[i].gone.Before(gone[j].gone) })
		for _, g := range gone[:min(extra, len(gone))] {
			delete(s.guests, g.name)
		}
	}
}

// Guests returns what each guest connected now, or lately, has done,
// sorted by name: guests that sent something (not probes); none once
// the server hands over.
func (s *Server) Guests() []GuestStats {
	if s.handingOver() {
		// Its guests are its successor's now: series of them here, at
		// no connection, would say each agent's connection ended.
		return nil
	}
	s.mu.Lock()
	s.forgetGuests(time.Now())
	out := make([]GuestStats, 0, len(s.guests))
	for _, g := range s.guests {
		if !g.greeted.Load() {
			continue
		}
		out = append(out, GuestStats{Guest: g.name, Sandbox: g.sandboxID(), Connections: g.conns, Held: g.share.Held(), Traffic: g.snapshot()})
	}
	s.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Guest < out[j].Guest })
	return out
}

// budget is a guest's rate of bytes, kept without a lock by the generic
// cell rate algorithm: tat is when the guest's bucket would be full again
// (Unix ns); each take moves it on by the bytes' time at the rate, and a
// guest more than a burst's time ahead of the clock is over budget. A
// zero rate is no budget.
type budget struct {
	disabled  bool
	nsPerByte float64
	burst     int64 // ns
	tat       atomic.Int64
}

func (b *budget) init(rate float64, burst int) {
	b.disabled = rate <= 0
	if !b.disabled {
		b.nsPerByte = float64(time.Second) / rate
		b.burst = int64(float64(max(burst, wire.MaxDatagram)) * b.nsPerByte)
	}
}

// take spends n bytes and says how long to wait before reading more: how
// far it puts the guest beyond its burst. Without contention (see pace) the
// guest is not put beyond it at all.
func (b *budget) take(n int, now time.Time, contended func(time.Time) bool) (wait time.Duration) {
	t, cost := now.UnixNano(), int64(float64(n)*b.nsPerByte)
	for {
		old := b.tat.Load()
		tat := max(old, t) + cost
		over := tat - t - b.burst
		if over > 0 && !contended(now) {
			tat, over = tat-over, 0
		}
		if b.tat.CompareAndSwap(old, tat) {
			return time.Duration(max(over, 0))
		}
	}
}

// contention is how the host relay knows whether guests compete: budgets
// are a share of the sink, and a guest alone is not held to one.
type contention struct {
	at     atomic.Int64 // when it was last counted (Unix ns)
	others atomic.Bool  // two or more guests sent within activeWindow
}

// activeWindow is how recently a guest must have sent to count as
// competing; recount how often the count is renewed.
const activeWindow, recount = time.Second, 20 * time.Millisecond

// budgetWait takes n bytes from g's budget and says how long to wait before
// reading more from g: zero within the budget, or when g is the only guest
// sending (one busy VM is never slowed for nothing).
func (s *Server) budgetWait(g *guest, n int) time.Duration {
	if g.budget.disabled {
		return 0
	}
	now := time.Now()
	wait := g.budget.take(n, now, s.contended)
	if t := now.UnixNano(); t-g.lastSend.Load() > int64(time.Millisecond) {
		g.lastSend.Store(t) // coarse: the guest's connections share it
	}
	return wait
}

// contended reports whether two or more guests sent within activeWindow,
// counting at most once per recount.
func (s *Server) contended(now time.Time) bool {
	c := &s.contention
	if at := c.at.Load(); now.UnixNano()-at < int64(recount) || !c.at.CompareAndSwap(at, now.UnixNano()) {
		return c.others.Load()
	}
	since, n := now.Add(-activeWindow).UnixNano(), 0
	s.mu.Lock()
	for _, g := range s.guests {
		if g.lastSend.Load() > since {
			n++
		}
	}
	s.mu.Unlock()
	c.others.Store(n > 1)
	return n > 1
}
