package hold

import (
	"fmt"
	"os"
	"sync"
	"sync/atomic"

	"github.com/katatrace/katatrace/internal/offheap"
)

// Chunk is the size of room given for any frame up to it: a host relay
// connection's whole read buffer (several of the largest relay frames to a
// system call), kept for reuse when returned; larger frames (a Kata
// agent's span, up to its limit) get room of their own size.
const Chunk = 256 << 10

// pageSize rounds room of its own size.
const pageSize = 4096

// cached bounds the chunks kept for reuse after their return, so that a
// busy stream does not map and unmap one at every burst.
const cached = 16

// errCanceled is Get's error when its wait is cut short (the host stops):
// it wraps os.ErrDeadlineExceeded, as a read's deadline does, so that a
// reader's caller sees a wait for room ended as it sees a read's.
var errCanceled = fmt.Errorf("waiting for room to hold a frame: %w", os.ErrDeadlineExceeded)

// Limit is the room for frames of every guest together, and of each.
type Limit struct {
	total, per int
	mu         sync.Mutex
	used       int
	waiters    []*waiter // in the order they asked
	free       [][]byte  // returned chunks
	waits      atomic.Uint64
	peak       atomic.Int64
}

// waiter is a Get waiting for room; ready is closed once granted.
type waiter struct {
	s     *Share
	n     int
	ready chan struct{}
}

// New returns a limit of total bytes, and per bytes for each guest.
func New(total, per int) (*Limit, error) {
	switch {
	case per < Chunk:
		return nil, fmt.Errorf("a guest's room for frames (%d bytes) must be at least %d", per, Chunk)
	case total < per:
		return nil, fmt.Errorf("the room for frames of all guests (%d bytes) must be at least one guest's (%d)", total, per)
	}
	return &Limit{total: total, per: per}, nil
}

// Share is one guest's part of a Limit. A nil Share is no limit: room
// comes from the heap.
type Share struct {
	l    *Limit
	used atomic.Int64 // written under l.mu
}

// Share returns a new guest's share.
func (l *Limit) Share() *Share { return &Share{l: l} }

// Stats is what a Limit holds and has waited for.
type Stats struct {
	// Held is the room given now, Peak the most ever given at once,
	// Waiting the frames waiting for room now; Waits counts the frames
	// that had to wait.
	Held, Peak  int64
	Waiting     int
	Waits       uint64
	Total, Each int
}

// Stats returns a snapshot.
func (l *Limit) Stats() Stats {
	l.mu.Lock()
	defer l.mu.Unlock()
	return Stats{Held: int64(l.used), Peak: l.peak.Load(), Waiting: len(l.waiters), Waits: l.waits.Load(), Total: l.total, Each: l.per}
}

// Held is the room this guest holds now.
func (s *Share) Held() int64 { return s.used.Load() }

// Size is the room a frame of n bytes is given.
func Size(n int) int {
	if n <= Chunk {
		return Chunk
	}
	return (n + pageSize - 1) / pageSize * pageSize
}

// fits reports whether n more bytes fit s's share and the total; l.mu is
// held.
func (s *Share) fits(n int) bool {
	return int(s.used.Load())+n <= s.l.per && s.l.used+n <= s.l.total
}

// take gives s n bytes of room; l.mu is held.
func (s *Share) take(n int) {
	s.used.Add(int64(n))
	s.l.used += n
	if u := int64(s.l.used); u > s.l.peak.Load() {
		s.l.peak.Store(u)
	}
}

// Get returns room for a frame of n bytes (a buffer of at least n),
// waiting until the guest's share and the total have it, or until cancel
// is closed (errCanceled). Frames are given room in the order they asked,
// except that one waiting for its own guest's share does not hold up
// another guest's.
func (s *Share) Get(n int, cancel <-chan struct{}) ([]byte, error) {
	if s == nil {
		return make([]byte, n), nil // no limit: the heap's
	}
	sz := Size(n)
	if sz > s.l.per {
		return nil, fmt.Errorf("a frame of %d bytes is larger than a guest's room for frames (%d)", n, s.l.per)
	}
	l := s.l
	l.mu.Lock()
	if s.fits(sz) && !l.totalWaits() {
		s.take(sz)
		b := l.buffer(sz)
		l.mu.Unlock()
		return b, nil
	}
	w := &waiter{s: s, n: sz, ready: make(chan struct{})}
	l.waiters = append(l.waiters, w)
	l.waits.Add(1)
	l.mu.Unlock()
	select {
	case <-w.ready:
	case <-cancel:
		l.mu.Lock()
		select {
		case <-w.ready: // granted meanwhile: give it back
			l.mu.Unlock()
			s.put(sz, nil)
			return nil, errCanceled
		default:
		}
		for i, o := range l.waiters {
			if o == w {
				l.waiters = append(l.waiters[:i], l.waiters[i+1:]...)
				break
			}
		}
		l.grant() // one behind it may fit now
		l.mu.Unlock()
		return nil, errCanceled
	}
	l.mu.Lock()
	b := l.buffer(sz)
	l.mu.Unlock()
	return b, nil
}

// totalWaits reports whether a frame waits for the total's room (not only
// its own guest's): a newcomer goes behind it. l.mu is held.
func (l *Limit) totalWaits() bool {
	for _, w := range l.waiters {
		if int(w.s.used.Load())+w.n <= l.per {
			return true
		}
	}
	return false
}

// grant gives room to waiters in order while the total has it, passing
// over those waiting for their own guest's share. l.mu is held.
func (l *Limit) grant() {
	kept := l.waiters[:0]
	blocked := false
	for _, w := range l.waiters {
		switch {
		case !blocked && w.s.fits(w.n):
			w.s.take(w.n)
			close(w.ready)
			continue
		case int(w.s.used.Load())+w.n <= l.per:
			blocked = true // the total's room: the rest wait behind this one
		}
		kept = append(kept, w)
	}
	clear(l.waiters[len(kept):])
	l.waiters = kept
}

// Put gives back room that Get returned.
func (s *Share) Put(b []byte) {
	if s == nil || b == nil {
		return
	}
	s.put(cap(b), b)
}

func (s *Share) put(sz int, b []byte) {
	l := s.l
	l.mu.Lock()
	s.used.Add(-int64(sz))
	l.used -= sz
	if b != nil && sz == Chunk && len(l.free) < cached {
		l.free = append(l.free, b[:Chunk])
		b = nil
	}
	l.grant()
	l.mu.Unlock()
	if b != nil {
		offheap.Free(b)
	}
}

// buffer maps sz bytes, or takes a returned chunk; l.mu is held.
func (l *Limit) buffer(sz int) []byte {
	if sz == Chunk && len(l.free) > 0 {
		b := l.free[len(l.free)-1]
		l.free[len(l.free)-1] = nil
		l.free = l.free[:len(l.free)-1]
		return b
	}
	return offheap.Map(sz)
}
