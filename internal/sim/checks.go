package sim

import (
	"errors"
	"fmt"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/katatrace/katatrace/guestrelay"
)

// The invariants, each named (a failure's name is what knownFailing is
// keyed by):
//
//   - datagram-mangled: the host read, or a sink was handed, something
//     that is not a whole datagram a client sent.
//   - numbering: one number of a v2 session carried two datagrams.
//   - uncounted-loss: a datagram the guest read (or was given by Send)
//     neither reached the endpoint nor is counted: by a sink (refused,
//     lost) by id; by the guest (dropped, refused, unread, left queued or
//     unconfirmed at its stop) in number.
//   - guest-miscounts / host-miscounts-refusals: a side's counters do not
//     add up to what it was given / what its sink refused.
//   - confirmed-lost: a datagram the host confirmed to the guest (a
//     number below a confirmation the guest read, whose frame the host
//     read, and that the guest did not move past unconfirmed: those it
//     dropped, counted) neither reached the endpoint nor is counted lost
//     by a sink.
//   - host-stop-drops-confirmed: a host's stop, its endpoint up and its
//     sink taking everything, dropped (counted) datagrams it had
//     confirmed: the guest will not send them again.
//   - flush-lied: a flush (or a stop) said everything was delivered while
//     some of what was queued before it was neither at the endpoint nor
//     counted; flush-unasked where no flush answer came meanwhile (the
//     relay answered itself).
//   - flush-unanswered: a healthy host (no fault for the guest's longest
//     backoff before the flush and during it) did not answer a flush
//     whose timeout left it the host's flush timeout and more.
//     flush-after-drop is the same where a flush request may have been
//     lost to drop-oldest before (issue 30, defect 1); flush-answer-
//     forgotten where the guest read flush answers while it waited (it
//     asked again after a "not accepted" answer, and a later answer
//     to another flush, covering its datagrams, did not end it).
//   - stop-flush-unanswered: the same for a guest's stop; drain-spends-
//     flush where reading the socket took half the drain timeout or more
//     (defect 2).
//   - guest-stop-overran, host-stop-overran: a stop took longer than its
//     drain timeout.
//   - left-running, host-stop-left-running: goroutines left after a stop.
//   - host-serve-failed, protocol: Serve failed; a guest's hello did not
//     parse.

const (
	// answerMargin is what a flush's timeout must leave beyond the host's
	// flush timeout for a healthy host to owe it an answer.
	answerMargin = 300 * time.Millisecond
	// settleMargin is added to a guest's longest backoff: how long before
	// a flush the host must have been healthy.
	settleMargin = 100 * time.Millisecond
)

func (w *world) check() {
	w.mu.Lock()
	taps := w.taps
	w.mu.Unlock()
	for i, t := range taps {
		t.mu.Lock()
		w.event("connection %d (guest %d): the host read %d datagrams and %d flush requests; the guest read %d confirmations and %d flush answers",
			i, t.guest, t.frames, t.requests, t.acks, t.answers)
		t.mu.Unlock()
	}
	w.mu.Lock()
	bad, conflicts := w.bad, w.conflicts
	w.mu.Unlock()
	if len(bad) > 0 {
		w.fail("datagram-mangled", "%d datagrams not whole, e.g. %s", len(bad), bad[0])
	}
	if len(conflicts) > 0 {
		w.fail("numbering", "%d numbers carried two datagrams, e.g. %s", len(conflicts), conflicts[0])
	}
	for _, g := range w.guests {
		w.checkGuest(g)
	}
	var sinkErrors, duplicates uint64
	for _, h := range w.hosts {
		sinkErrors += h.stats.SinkErrors
		duplicates += h.stats.Duplicates
	}
	w.event("the hosts dropped %d resent datagrams as duplicates, and handed on %d they had handed on already", duplicates, w.handedAgain)
	if w.refusals != int(sinkErrors) {
		w.fail("host-miscounts-refusals", "the sinks refused %d datagrams, the hosts counted %d", w.refusals, sinkErrors)
	}
	w.checkConfirmed()
}

// fate is what became of a datagram on the host's side: "" for nothing
// known (never handed on, or held still).
func (w *world) fate(id uint64) string {
	switch {
	case w.got[id] > 0:
		return "delivered"
	case w.refusedN[id] > 0:
		return "refused"
	}
	if l, ok := w.lostBy[id]; ok {
		return "lost: " + l.why
	}
	return ""
}

func (w *world) checkGuest(g *simGuest) {
	st := g.relay.Stats()
	g.pc.mu.Lock()
	read := slices.Clone(g.pc.read)
	socketDropped, discarded := g.pc.dropped, g.pc.discarded
	g.pc.mu.Unlock()
	g.mu.Lock()
	given := append(read, g.sent...)
	made := g.next
	g.mu.Unlock()

	if got, want := st.Queue.Enqueued+st.Queue.Rejected+st.SocketDropped, uint64(len(given)); got != want {
		w.fail("guest-miscounts", "guest %d was given %d datagrams (read or Send), and counts %d (queued %d, refused %d, unread %d)",
			g.i, want, got, st.Queue.Enqueued, st.Queue.Rejected, st.SocketDropped)
	}
	w.mu.Lock()
	var delivered, refused, lost, dups, unknown int
	var example uint64
	for _, id := range given {
		switch f := w.fate(id); {
		case f == "delivered":
			delivered++
			dups += w.got[id] - 1
		case f == "refused":
			refused++
		case f != "":
			lost++
		default:
			if unknown == 0 {
				example = id
			}
			unknown++
		}
	}
	w.mu.Unlock()
	counted := st.Queue.Dropped + st.Queue.Rejected + st.SocketDropped + uint64(st.Queue.Queued) + uint64(st.Queue.Unacked)
	w.event("guest %d: made %d, socket dropped %d and discarded %d, read or given %d: delivered %d (%d more times), refused by a sink %d, lost by one %d, not handed on %d; the guest counts dropped %d, refused %d, unread %d, left %d queued and %d unconfirmed",
		g.i, made, socketDropped, discarded, len(given), delivered, dups, refused, lost, unknown,
		st.Queue.Dropped, st.Queue.Rejected, st.SocketDropped, st.Queue.Queued, st.Queue.Unacked)
	if uint64(unknown) > counted {
		w.fail("uncounted-loss", "guest %d: %d datagrams never reached the endpoint nor a count of a sink, and the guest counts only %d (dropped %d, refused %d, unread %d, left %d queued and %d unconfirmed); e.g. %#x",
			g.i, unknown, counted, st.Queue.Dropped, st.Queue.Rejected, st.SocketDropped, st.Queue.Queued, st.Queue.Unacked, example)
	}

	for _, rec := range g.flushes {
		if rec.err == nil || answered(rec.err) || rec.timeout < w.plan.flushTimeout+answerMargin || rec.end.After(g.stop.start) {
			continue // a flush still waiting when its relay stops is answered by nobody
		}
		// Healthy from before it asked until a host had to answer it (a
		// fault after that, within its own longer timeout, excuses
		// nothing).
		if !w.healthy(rec.start.Add(-g.plan.backoffMax-settleMargin), minTime(rec.end, rec.start.Add(w.plan.flushTimeout+answerMargin))) {
			continue
		}
		inv := "flush-unanswered"
		switch {
		case w.markerLost(g, rec.start):
			inv = "flush-after-drop"
		case rec.asked > 0:
			inv = "flush-answer-forgotten"
		}
		w.fail(inv, "guest %d: a flush at %v (timeout %v) to a healthy host said: %v; the guest read %d flush answers while it waited (%d before it); then %d queued, %d unconfirmed, %d dropped",
			g.i, rec.start.Sub(w.t0), rec.timeout, rec.err, rec.asked, rec.before.FlushesAnswered, rec.after.Queue.Queued, rec.after.Queue.Unacked, rec.after.Queue.Dropped)
	}

	s := g.stop
	// The stop's flush has what reading left of the bound: a host had to
	// answer it only if that was its flush timeout and more.
	if s.err != nil && !answered(s.err) && s.end.Sub(s.readDone) >= w.plan.flushTimeout+answerMargin {
		if w.healthy(s.start.Add(-g.plan.backoffMax-settleMargin), s.end) {
			inv, reading := "stop-flush-unanswered", s.readDone.Sub(s.start)
			switch {
			case reading > g.plan.drain/2+settleMargin:
				inv = "drain-spends-flush"
			case w.markerLost(g, s.end):
				inv = "flush-after-drop"
			}
			w.fail(inv, "guest %d: its stop (drain %v) against a healthy host said: %v; it read its socket for %v; at the end %d queued, %d unconfirmed, %d sent, %d confirmed",
				g.i, g.plan.drain, s.err, reading, s.stats.Queue.Queued, s.stats.Queue.Unacked, s.stats.Sent, s.stats.Queue.Acked)
		}
	}
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// answered reports whether a flush's error says the host answered (its
// endpoint had not accepted everything).
func answered(err error) bool {
	var na *guestrelay.NotAcceptedError
	return errors.As(err, &na)
}

// markerLost reports whether, before t, one of the guest's flush
// requests may have been lost as issue 30's defect 1 loses one: a
// flush went unanswered while the guest's queue dropped datagrams, or
// the host read a request on a connection that ended without its
// answer, and the queue dropped datagrams before the next connection
// (drop-oldest takes a request sent, whose answer then comes nowhere).
func (w *world) markerLost(g *simGuest, t time.Time) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, p := range g.flushes {
		if p.start.Before(t) && p.err != nil && !answered(p.err) && p.after.Queue.Dropped > p.before.Queue.Dropped {
			return true
		}
	}
	w.mu.Lock()
	taps := w.taps
	w.mu.Unlock()
	for i := 0; i+1 < len(g.conns); i++ {
		this, next := g.conns[i], g.conns[i+1]
		if !next.at.Before(t) || next.dropped == this.dropped {
			continue
		}
		tap := taps[this.id]
		tap.mu.Lock()
		unanswered := tap.requests > tap.answers
		tap.mu.Unlock()
		if unanswered {
			return true
		}
	}
	return false
}

// checkReceipt checks a flush's (or a stop's) "all delivered": each of
// ids, queued before it, is at the endpoint or counted lost by a sink,
// but for as many as the guest itself counts dropped.
func (w *world) checkReceipt(g *simGuest, ids []uint64, st guestrelay.Stats, asked int, what string) {
	w.mu.Lock()
	missing, held := 0, 0
	var example uint64
	for _, id := range ids {
		if w.fate(id) != "" {
			continue
		}
		if w.handedN[id] > 0 {
			held++ // handed to a sink that still holds it
		}
		if missing == 0 {
			example = id
		}
		missing++
	}
	w.mu.Unlock()
	if counted := st.Queue.Dropped + st.Queue.Rejected + st.SocketDropped; uint64(missing) > counted {
		inv := "flush-lied"
		if asked == 0 {
			inv = "flush-unasked" // Flush's early return: not connected, nothing queued or unconfirmed
		}
		w.fail(inv, "guest %d's %s said everything was delivered, with %d of the %d datagrams queued before it neither at the endpoint nor counted lost by a sink (%d of them held by one), and the guest counting %d dropped, refused or unread; e.g. %#x; the host answered %d flushes meanwhile",
			g.i, what, missing, len(ids), held, counted, example, asked)
	}
}

// checkConfirmed checks every datagram the host confirmed to a guest (a
// number below a confirmation the guest read, whose frame the host read).
func (w *world) checkConfirmed() {
	w.mu.Lock()
	defer w.mu.Unlock()
	var lostConfirmed []string
	atStop := map[int]int{}
	for session, m := range w.seqs {
		for seq, id := range m {
			if seq >= w.acks[session] || slices.ContainsFunc(w.skipped[session], func(s span) bool { return seq >= s.from && seq < s.to }) {
				continue
			}
			switch f := w.fate(id); {
			case f == "":
				lostConfirmed = append(lostConfirmed, fmt.Sprintf("%#x (session %#x number %d, handed to a sink %d times)", id, session, seq, w.handedN[id]))
			case w.lostBy[id].why == whyClosed:
				atStop[w.lostBy[id].gen]++
			}
		}
	}
	if len(lostConfirmed) > 0 {
		slices.Sort(lostConfirmed)
		w.failures = append(w.failures, failure{"confirmed-lost", fmt.Sprintf("%d datagrams confirmed to their guest were neither delivered nor counted lost, e.g. %s", len(lostConfirmed), lostConfirmed[0])})
	}
	for _, h := range w.hosts {
		n := atStop[h.gen]
		if n == 0 || !w.healthyEndpoint(h.stopFrom, h.stopTo) || !w.sinkCouldDeliver(h.sink) {
			continue
		}
		w.failures = append(w.failures, failure{"host-stop-drops-confirmed", fmt.Sprintf(
			"host %d's stop (%v, its endpoint up, its sink taking everything) dropped %d datagrams it had confirmed (counted by its sink; the guest will not send them again)",
			h.gen, h.stopTo.Sub(h.stopFrom), n)})
	}
}

// sinkCouldDeliver reports whether the sink's share of its host's stop was
// time enough to hand its endpoint what it held as its close began (one
// batch per latency, one at a time, as its worker posts): a backlog
// beyond that is reported lost, counted, as the host promises; w.mu is
// held.
func (w *world) sinkCouldDeliver(s *simSink) bool {
	s.mu.Lock()
	held, share := s.closeHeld, s.closeShare
	s.mu.Unlock()
	if w.plan.latency <= 0 {
		return true
	}
	posts := (held + w.plan.batch - 1) / w.plan.batch
	return time.Duration(posts+1)*w.plan.latency <= share
}

// healthyEndpoint reports whether the endpoint was up and the sink took
// everything through [from, to]; w.mu is held.
func (w *world) healthyEndpoint(from, to time.Time) bool {
	a, b := from.Sub(w.t0), to.Sub(w.t0)
	for _, ew := range w.plan.endpointWindows {
		if ew.from <= b && ew.to >= a {
			return false
		}
	}
	for _, sw := range w.plan.sinkWindows {
		if sw.from <= b && sw.to >= a {
			return false
		}
	}
	return true
}

var bubbleRE = regexp.MustCompile(`synctest bubble (\d+)`)

// leftRunning lists the goroutines of the caller's bubble, but the caller
// and the test's own, whose stacks name one of patterns (any, without).
func leftRunning(patterns ...string) []string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	gs := strings.Split(string(buf), "\n\n")
	self := bubbleRE.FindString(firstLine(gs[0]))
	var left []string
	for _, g := range gs[1:] {
		if self == "" || bubbleRE.FindString(firstLine(g)) != self ||
			strings.Contains(g, "synctest.testingSynctestTest(") || strings.Contains(g, "internal/synctest.Run(") {
			continue
		}
		if len(patterns) > 0 && !slices.ContainsFunc(patterns, func(p string) bool { return strings.Contains(g, p) }) {
			continue
		}
		lines := strings.Split(g, "\n")
		left = append(left, strings.Join(lines[:min(len(lines), 13)], "\n"))
	}
	return left
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(s, "\n")
	return l
}
