package sim

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/katatrace/katatrace/guestid"
	"github.com/katatrace/katatrace/sink"
)

// simSink is a host relay's sink with an endpoint, as the collector and
// OTLP sinks are (sink.Holder): what SendBatch takes waits in a bounded
// queue (drop oldest, counted) for a worker to hand it to the endpoint,
// which takes a while (latency) and may be down (retried until retryFor,
// then dropped, counted) or refuse (dropped, counted). The schedule's
// sink windows make SendBatch stall, refuse everything, or refuse part
// of a batch. One per host process: it goes with its host, the endpoint
// stays.
type simSink struct {
	w   *world
	gen int

	mu     sync.Mutex
	wake   chan struct{}
	queue  []heldDatagram
	busy   int            // datagrams being handed to the endpoint
	held   map[string]int // per guest: queued or being handed on
	lost   map[string]uint64
	closed bool
	// closeHeld is what the sink held as its Close began, and closeShare
	// the time Close had: whether it could deliver all of it.
	closeHeld  int
	closeShare time.Duration
	closing    chan struct{} // closed by Close: stalls end
	life       chan struct{} // closed when Close runs out of time: in-flight work is dropped
	done       chan struct{} // the worker is gone
}

type heldDatagram struct {
	id    uint64
	guest string
}

var (
	_ sink.BatchSink = (*simSink)(nil)
	_ sink.Holder    = (*simSink)(nil)
)

func newSimSink(w *world, gen int) *simSink {
	s := &simSink{w: w, gen: gen, wake: make(chan struct{}), held: map[string]int{}, lost: map[string]uint64{},
		closing: make(chan struct{}), life: make(chan struct{}), done: make(chan struct{})}
	go s.worker()
	return s
}

func (s *simSink) signal() {
	close(s.wake)
	s.wake = make(chan struct{})
}

func (s *simSink) Send(p []byte, from guestid.ID) error {
	_, err := s.SendBatch([][]byte{p}, from)
	return err
}

// whyClosed is the loss of what a sink still held when its Close ran
// out of time.
const whyClosed = "dropped: the sink closed out of time"

var errSinkRefused = errors.New("the simulated sink refused it")

// SendBatch takes what the sink's mode lets it take, and says how many it
// refused.
func (s *simSink) SendBatch(ps [][]byte, from guestid.ID) (failed int, err error) {
	mode := s.w.plan.sinkAt(s.w.since())
	if mode.mode == sinkStall {
		s.w.unhealthy("sink stalls a send", mode.stall)
		t := time.NewTimer(mode.stall)
		select {
		case <-t.C:
		case <-s.closing:
			t.Stop()
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.w.mu.Lock()
	defer s.w.mu.Unlock()
	for _, p := range ps {
		id := s.w.arrivedLocked(p, s.gen)
		refuse := s.closed || mode.mode == sinkRefuse ||
			mode.mode == sinkPartial && s.w.keyed(id, s.w.arrivals[id]-1) < mode.share
		if refuse {
			failed++
			s.w.refusedN[id]++
			s.w.refusals++
			continue
		}
		if len(s.queue) >= s.w.plan.maxHeld {
			old := s.queue[0]
			s.queue = s.queue[1:]
			s.settleLocked(old, "dropped: the sink's queue was full")
		}
		if s.w.handedN[id] > 0 && s.w.handedBy[id] == s.gen {
			s.w.handedAgain++ // by the host that had handed it on already
		}
		s.w.handedN[id]++
		s.w.handedBy[id] = s.gen
		if s.w.sabotage == "sink-loses" && id%8 == 0 {
			continue // taken, and forgotten
		}
		s.queue = append(s.queue, heldDatagram{id, from.Guest})
		s.held[from.Guest]++
	}
	s.signal()
	if failed > 0 && s.w.sabotage == "sink-undercounts" {
		failed--
	}
	if failed > 0 {
		return failed, errSinkRefused
	}
	return 0, nil
}

// settle ends the holding of d: accepted by the endpoint (why ""), or
// lost, counted; s.mu is held.
func (s *simSink) settle(d heldDatagram, why string) {
	s.w.mu.Lock()
	defer s.w.mu.Unlock()
	s.settleLocked(d, why)
}

// settleLocked is settle, w.mu held too.
func (s *simSink) settleLocked(d heldDatagram, why string) {
	if s.held[d.guest]--; s.held[d.guest] == 0 {
		delete(s.held, d.guest)
	}
	if why != "" {
		s.lost[d.guest]++
		s.w.lostBy[d.id] = loss{why, s.gen}
	}
}

func (s *simSink) worker() {
	defer close(s.done)
	for {
		s.mu.Lock()
		for len(s.queue) == 0 && !s.closed {
			wake := s.wake
			s.mu.Unlock()
			<-wake
			s.mu.Lock()
		}
		if len(s.queue) == 0 {
			s.mu.Unlock()
			if s.w.sabotage == "sink-leaks" {
				<-s.life // never closed: the flush succeeded
			}
			return
		}
		select {
		case <-s.life:
			for _, d := range s.queue {
				s.settle(d, whyClosed)
			}
			s.queue = nil
			s.signal()
			s.mu.Unlock()
			return
		default:
		}
		n := min(len(s.queue), s.w.plan.batch)
		taken := append([]heldDatagram(nil), s.queue[:n]...)
		s.queue = s.queue[n:]
		s.busy += n
		s.mu.Unlock()

		why := s.post(taken)

		s.mu.Lock()
		s.busy -= n
		for _, d := range taken {
			s.settle(d, why)
		}
		s.signal()
		s.mu.Unlock()
	}
}

// post hands a batch to the endpoint: "" once accepted, else why it was
// lost.
func (s *simSink) post(batch []heldDatagram) string {
	start, backoff := time.Now(), 20*time.Millisecond
	for {
		if !s.sleep(s.w.plan.latency) {
			return whyClosed
		}
		switch s.w.plan.endpointAt(s.w.since()) {
		case endpointUp:
			s.w.accepted(batch)
			return ""
		case endpointRejecting:
			return "refused by the endpoint"
		}
		if time.Since(start) >= s.w.plan.retryFor {
			return "dropped: the endpoint was down past the retry time"
		}
		if !s.sleep(backoff) {
			return whyClosed
		}
		backoff = min(2*backoff, 200*time.Millisecond)
	}
}

// sleep waits d, or until Close runs out of time (false).
func (s *simSink) sleep(d time.Duration) bool {
	if d <= 0 {
		select {
		case <-s.life:
			return false
		default:
			return true
		}
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-s.life:
		return false
	}
}

// wait waits until pending (called with s.mu held) is zero, or ctx ends.
func (s *simSink) wait(ctx context.Context, pending func() int) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for {
		n := pending()
		if n == 0 {
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("sim sink: %d datagrams not yet accepted: %w", n, ctx.Err())
		}
		wake := s.wake
		s.mu.Unlock()
		select {
		case <-wake:
		case <-ctx.Done():
		}
		s.mu.Lock()
	}
}

func (s *simSink) Flush(ctx context.Context) error {
	return s.wait(ctx, func() int { return len(s.queue) + s.busy })
}

// FlushGuest waits for the guest's datagrams to be taken by the endpoint;
// a stalled sink waits for nothing but ctx, as a wedged one would.
func (s *simSink) FlushGuest(ctx context.Context, guest string) (held int, lost uint64, err error) {
	switch s.w.sabotage {
	case "sink-says-done":
		return 0, 0, nil
	case "sink-hangs":
		<-s.closing
		return 0, 0, nil
	}
	if s.w.plan.sinkAt(s.w.since()).mode == sinkStall {
		<-ctx.Done()
		err = ctx.Err()
	} else {
		err = s.wait(ctx, func() int { return s.held[guest] })
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.held[guest], s.lost[guest], err
}

func (s *simSink) Lost(guest string) uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lost[guest]
}

// Close flushes, bounded by ctx; out of time, what the sink still holds
// is dropped and counted. The worker is gone when it returns. Once only.
func (s *simSink) Close(ctx context.Context) error {
	if s.w.sabotage == "sink-close-overruns" {
		ctx = context.Background()
	}
	s.mu.Lock()
	s.closeHeld = len(s.queue) + s.busy
	if d, ok := ctx.Deadline(); ok {
		s.closeShare = time.Until(d)
	}
	s.mu.Unlock()
	err := s.Flush(ctx)
	s.mu.Lock()
	s.closed = true
	close(s.closing)
	if err != nil {
		close(s.life)
	}
	s.signal()
	s.mu.Unlock()
	if s.w.sabotage == "sink-leaks" {
		return err // its worker left running
	}
	<-s.done
	if err == nil {
		close(s.life)
	}
	return err
}

// keyed is a draw in [0,1) that depends only on the seed, the datagram
// and how many times a sink was handed it: a datagram's fate does not
// depend on how the goroutines happened to interleave.
func (w *world) keyed(id uint64, attempt int) float64 {
	return rand.New(rand.NewPCG(w.plan.seed^0x5151, id<<8|uint64(attempt&0xff))).Float64()
}
