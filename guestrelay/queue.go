package guestrelay

import (
	"encoding/binary"
	"runtime"
	"sync"
	"time"

	"github.com/katatrace/katatrace/internal/offheap"
	"github.com/katatrace/katatrace/wire"
)

// queue is a bounded FIFO of datagrams and flush markers, kept in one ring of
// bytes in wire format (4-byte length, payload), so that taking a batch out is
// a copy and adding one allocates nothing. When a datagram does not fit, the
// oldest are dropped, and counted, until it does.
type queue struct {
	mu   sync.Mutex
	ring []byte
	// size is the part of ring in use: records wrap at it. It starts at
	// ringStart, grows as what is held needs, and goes back once the queue
	// empties after a while without growing, so that a queue holding
	// little touches (and keeps resident) only the pages of that part, not
	// all of ring as it goes round.
	size  int
	grown time.Time // when size last grew
	head  int       // offset of the oldest record
	used  int       // bytes in use
	recs  int       // records in the ring, flush markers included
	ready chan struct{}
	room  chan struct{} // signalled when records leave the ring
	stats QueueStats

	// Flushes are numbered from 1 in the order pushed (their tickets);
	// markers leave the ring from its head only, so it holds a run of
	// them, the newest: flushes is the last ticket, markers how many are
	// held. answered is the newest flush the host answered: an answer
	// tells of everything before its request, so every flush up to it is
	// answered.
	flushes  uint64
	markers  int
	answered uint64
	// owed is the newest flush whose marker drop-oldest took out of the
	// ring unanswered (0: none). Everything before it is gone from the
	// queue (confirmed, or dropped and counted), so one request sent
	// ahead of what the queue holds answers it. A retaining queue asks it
	// on every connection until answered (owedSent: already on this one);
	// another hands it to the sender once.
	owed     uint64
	owedSent bool

	// Retaining (protocol v2): what Pop takes stays in the ring until Ack
	// (datagrams) or AckFlush (flush markers), and Rewind sends it again.
	// cur, curRecs and curDgrams measure the popped part from head.
	retain                  bool
	cur, curRecs, curDgrams int
	// headSeq numbers the first datagram at or after head; datagrams are
	// numbered from 1 in the order pushed, so the ring holds a run.
	headSeq uint64
}

// QueueStats counts what passed through a relay's queue.
type QueueStats struct {
	Enqueued     uint64 // datagrams accepted
	Dequeued     uint64 // datagrams taken out for sending
	Dropped      uint64 // datagrams dropped, oldest first, to make room
	DroppedBytes uint64 // their payload bytes
	Rejected     uint64 // datagrams refused: empty, above MaxDatagram or above the queue size
	Acked        uint64 // datagrams the host confirmed (retaining queue)
	Queued       int    // datagrams waiting now, to be sent
	Unacked      int    // datagrams sent and not yet confirmed (retaining queue)
	QueuedBytes  int    // bytes held now, 4 bytes of framing each included
}

// newQueue returns a queue holding at most maxBytes, counting 4 bytes of
// framing per datagram. maxBytes is raised to MaxFrameSize if smaller, so
// that any datagram fits.
func newQueue(maxBytes int) *queue {
	maxBytes = max(maxBytes, wire.MaxFrameSize)
	ring := offheap.Map(maxBytes)
	q := &queue{ring: ring, size: min(maxBytes, ringStart), ready: make(chan struct{}, 1), room: make(chan struct{}, 1), headSeq: 1}
	runtime.AddCleanup(q, offheap.Free, ring)
	return q
}

// ringStart is the part of a queue's ring used while it holds little;
// ringSettle how long it must not have grown to go back to it.
const (
	ringStart  = 256 << 10
	ringSettle = time.Second
)

// newRetainingQueue is a queue for protocol v2: what Pop takes stays
// until the host confirms it (Ack, AckFlush), and Rewind takes it again.
func newRetainingQueue(maxBytes int) *queue {
	q := newQueue(maxBytes)
	q.retain = true
	return q
}

// Cap is the queue's size in bytes.
func (q *queue) Cap() int { return len(q.ring) }

// Ready is signalled after a push; a consumer waits on it when Pop gave nothing.
func (q *queue) Ready() <-chan struct{} { return q.ready }

// Room is signalled when records leave the ring (sent, or confirmed).
func (q *queue) Room() <-chan struct{} { return q.room }

// Free is the room left, in bytes (4 bytes of framing per datagram).
func (q *queue) Free() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.ring) - q.used
}

func (q *queue) freed() {
	select {
	case q.room <- struct{}{}:
	default:
	}
}

func (q *queue) signal() {
	select {
	case q.ready <- struct{}{}:
	default:
	}
}

// Push adds a copy of datagram p and returns how many older datagrams it
// dropped to make room. It returns false when p itself is refused (empty or
// larger than MaxDatagram), which is counted in Rejected.
func (q *queue) Push(p []byte) (dropped int, ok bool) {
	q.mu.Lock()
	dropped, ok = q.pushLocked(p)
	q.mu.Unlock()
	if ok {
		q.signal()
	}
	return dropped, ok
}

// PushBatch pushes several datagrams under one lock and wakes the consumer
// once: a batch from recvmmsg costs one hand-off, not one per datagram.
func (q *queue) PushBatch(ps [][]byte) (dropped, refused int) {
	q.mu.Lock()
	for _, p := range ps {
		d, ok := q.pushLocked(p)
		dropped += d
		if !ok {
			refused++
		}
	}
	q.mu.Unlock()
	if refused < len(ps) {
		q.signal()
	}
	return dropped, refused
}

func (q *queue) pushLocked(p []byte) (dropped int, ok bool) {
	if len(p) == 0 || len(p) > wire.MaxDatagram {
		q.stats.Rejected++
		return 0, false
	}
	dropped = q.makeRoom(wire.FrameHeaderSize + len(p))
	q.put(p)
	q.stats.Enqueued++
	q.stats.Queued++
	return dropped, true
}

// PushFlush adds a flush marker behind every datagram pushed so far, and
// returns its ticket: the flush is answered once AckFlush reaches it.
func (q *queue) PushFlush() uint64 {
	q.mu.Lock()
	q.makeRoom(wire.FrameHeaderSize)
	q.put(nil)
	q.flushes++
	ticket := q.flushes
	q.mu.Unlock()
	q.signal()
	return ticket
}

// LastFlush is the ticket of the newest flush pushed (0: none).
func (q *queue) LastFlush() uint64 {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.flushes
}

// headTicket is the ticket of the oldest marker held (when one is).
func (q *queue) headTicket() uint64 { return q.flushes - uint64(q.markers) + 1 }

// makeRoom drops the oldest records until n more bytes fit.
func (q *queue) makeRoom(n int) (dropped int) {
	if q.size-q.used < n && q.size < len(q.ring) {
		q.grow(n)
	}
	for q.size-q.used < n {
		size := q.lenAt(q.head)
		popped := q.curRecs > 0
		if size == 0 {
			if t := q.headTicket(); t > q.answered {
				// Its waiter still needs an answer; sent (popped), it
				// may yet come on this connection.
				q.owed, q.owedSent = t, popped
			}
			q.removeHead(0)
			continue
		}
		q.removeHead(size)
		dropped++
		q.stats.Dropped++
		q.stats.DroppedBytes += uint64(size)
		if !popped {
			q.stats.Queued--
		}
	}
	return dropped
}

// removeHead takes the record at head, of payload size, out of the ring.
func (q *queue) removeHead(size int) {
	q.advance(wire.FrameHeaderSize + size)
	if size > 0 {
		q.headSeq++
	} else {
		q.markers--
	}
	if q.curRecs > 0 {
		q.cur -= wire.FrameHeaderSize + size
		q.curRecs--
		if size > 0 {
			q.curDgrams--
		}
	}
}

func (q *queue) lenAt(off int) int {
	var h [wire.FrameHeaderSize]byte
	q.read(h[:], off)
	return int(binary.BigEndian.Uint32(h[:]))
}

func (q *queue) advance(n int) {
	q.head = (q.head + n) % q.size
	q.used -= n
	q.recs--
}

// shrink starts an empty queue again at the start of its ring, and goes
// back to using only ringStart of it once it has not grown for
// ringSettle: after records left it, not while making room (that would
// drop more than needed); not at every emptying, or a queue that holds
// much between emptyings would grow again each time, copying.
func (q *queue) shrink() {
	if q.used > 0 {
		return
	}
	q.head = 0
	if start := min(len(q.ring), ringStart); q.size > start && time.Since(q.grown) >= ringSettle {
		q.size = start
	}
}

// grow enlarges the part of the ring in use to hold n more bytes, in
// steps of ringStart (up to all of it), so that what is resident follows
// what is held. Whichever part of wrapped records is shorter moves: the
// part at the start to just past the old end, or the part at the old end
// to the new end.
func (q *queue) grow(n int) {
	size := min(len(q.ring), (q.used+n+ringStart-1)/ringStart*ringStart)
	if wrapped := q.head + q.used - q.size; wrapped > 0 {
		if tail := q.size - q.head; wrapped <= size-q.size && wrapped <= tail {
			copy(q.ring[q.size:], q.ring[:wrapped])
		} else {
			copy(q.ring[size-tail:size], q.ring[q.head:q.size])
			q.head = size - tail
		}
	}
	q.size = size
	q.grown = time.Now()
}

// put appends a record; room was made.
func (q *queue) put(p []byte) {
	var h [wire.FrameHeaderSize]byte
	binary.BigEndian.PutUint32(h[:], uint32(len(p)))
	tail := (q.head + q.used) % q.size
	tail = q.write(h[:], tail)
	q.write(p, tail)
	q.used += wire.FrameHeaderSize + len(p)
	q.recs++
	if len(p) == 0 {
		q.markers++
	}
}

// write copies p into the ring at off, wrapping, and returns the end offset.
func (q *queue) write(p []byte, off int) int {
	n := copy(q.ring[off:q.size], p)
	if n < len(p) {
		return copy(q.ring, p[n:])
	}
	return (off + n) % q.size
}

// read copies len(p) bytes from the ring at off, wrapping.
func (q *queue) read(p []byte, off int) {
	n := copy(p, q.ring[off:q.size])
	copy(p[n:], q.ring)
}

// batch is what one Pop took out of the queue.
type batch struct {
	Buf       []byte // the records, in wire format unless popped raw
	Datagrams int
	// Flushes are the tickets of the flush markers taken, an owed one
	// first, in the order they go out.
	Flushes []uint64
	// FirstSeq is the number of the first datagram taken (or the next one).
	FirstSeq uint64
}

// Pop appends whole records to dst, in wire format, while they fit in
// cap(dst) (an owed flush request first), and the tickets of the flush
// requests among them to tickets, and reports what it took.
func (q *queue) Pop(dst []byte, tickets []uint64) batch { return q.pop(dst, tickets, false) }

// PopPayload appends one datagram's payload alone (and takes the flush
// markers before it), for peers that cannot frame.
func (q *queue) PopPayload(dst []byte, tickets []uint64) batch { return q.pop(dst, tickets, true) }

func (q *queue) pop(dst []byte, tickets []uint64, raw bool) batch {
	b := batch{Buf: dst, Flushes: tickets[:0]}
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.owed > 0 && !q.owedSent { // first: callers give room for a batch
		if !raw {
			b.Buf = wire.AppendFrame(b.Buf, nil)
		}
		b.Flushes = append(b.Flushes, q.owed)
		if q.retain {
			q.owedSent = true
		} else {
			q.owed = 0 // the sender keeps it from here
		}
	}
	b.FirstSeq = q.headSeq + uint64(q.curDgrams)
	taken := 0
	for ; q.recs > q.curRecs; taken++ {
		off := (q.head + q.cur) % q.size
		size := q.lenAt(off)
		n := wire.FrameHeaderSize + size
		if raw {
			if size > 0 && b.Datagrams > 0 {
				break
			}
			n = size
		}
		if cap(b.Buf)-len(b.Buf) < n {
			break
		}
		if raw {
			off = (off + wire.FrameHeaderSize) % q.size
		}
		l := len(b.Buf)
		b.Buf = b.Buf[:l+n]
		q.read(b.Buf[l:], off)
		if size > 0 {
			b.Datagrams++
			q.stats.Dequeued++
			q.stats.Queued--
		} else {
			b.Flushes = append(b.Flushes, q.headTicket()+uint64(q.curRecs-q.curDgrams))
		}
		if q.retain {
			q.cur += wire.FrameHeaderSize + size
			q.curRecs++
			if size > 0 {
				q.curDgrams++
			}
		} else {
			q.removeHead(size)
		}
	}
	if !q.retain && taken > 0 {
		q.shrink()
		q.freed()
	}
	return b
}

// Ack removes the sent datagrams numbered below next, from the oldest,
// stopping at a flush marker (AckFlush takes it: the host confirms what
// came before a flush request before it answers it). It returns how many.
func (q *queue) Ack(next uint64) int {
	q.mu.Lock()
	defer q.mu.Unlock()
	n := 0
	for q.curRecs > 0 && q.headSeq < next {
		size := q.lenAt(q.head)
		if size == 0 {
			break
		}
		q.removeHead(size)
		q.stats.Acked++
		n++
	}
	if n > 0 {
		q.shrink()
		q.freed()
	}
	return n
}

// AckFlush takes the host's answer to the flush of ticket t: it and
// every flush before it are answered, and their markers leave the ring
// as the datagrams before them are confirmed (Ack).
func (q *queue) AckFlush(t uint64) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.answered = max(q.answered, t)
	if q.owed <= q.answered {
		q.owed, q.owedSent = 0, false
	}
	removed := false
	for q.curRecs > 0 && q.lenAt(q.head) == 0 && q.headTicket() <= q.answered {
		q.removeHead(0)
		removed = true
	}
	if removed {
		q.shrink()
		q.freed()
	}
}

// Rewind makes everything sent and not confirmed due again, as for a new
// connection, and returns the number of the first datagram due.
func (q *queue) Rewind() uint64 {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.stats.Queued += q.curDgrams
	q.cur, q.curRecs, q.curDgrams = 0, 0, 0
	// The old connection's answers will not come: an owed flush is asked
	// again, as the markers still held are.
	q.owedSent = false
	return q.headSeq
}

// Stats returns a snapshot of the counters.
func (q *queue) Stats() QueueStats {
	q.mu.Lock()
	defer q.mu.Unlock()
	s := q.stats
	s.QueuedBytes = q.used
	s.Unacked = q.curDgrams
	return s
}
