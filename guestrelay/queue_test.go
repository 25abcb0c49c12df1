package guestrelay

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/katatrace/katatrace/internal/testutil"
	"github.com/katatrace/katatrace/wire"
)

func TestQueueDropOldest(t *testing.T) {
	q := newQueue(wire.MaxFrameSize) // the smallest allowed size
	p := make([]byte, 1000)
	fit := wire.MaxFrameSize / (wire.FrameHeaderSize + len(p))
	for i := range fit + 10 {
		binary.BigEndian.PutUint32(p, uint32(i))
		q.Push(p)
	}
	s := q.Stats()
	if s.Dropped != 10 || s.DroppedBytes != 10000 || s.Queued != fit || s.Enqueued != uint64(fit+10) {
		t.Fatalf("stats = %+v, want 10 dropped and %d queued", s, fit)
	}
	b := q.Pop(make([]byte, 0, 2*wire.MaxFrameSize), nil)
	if b.Datagrams != fit || len(b.Buf) != fit*(wire.FrameHeaderSize+len(p)) {
		t.Fatalf("pop took %d datagrams, %d bytes", b.Datagrams, len(b.Buf))
	}
	// The survivors are the newest, in order.
	for i := range fit {
		rec := b.Buf[i*(wire.FrameHeaderSize+len(p)):]
		if n := binary.BigEndian.Uint32(rec); n != uint32(len(p)) {
			t.Fatalf("record %d has length %d", i, n)
		}
		if seq := binary.BigEndian.Uint32(rec[wire.FrameHeaderSize:]); seq != uint32(10+i) {
			t.Fatalf("record %d is datagram %d, want %d", i, seq, 10+i)
		}
	}
}

func TestQueueWrapAndBatches(t *testing.T) {
	q := newQueue(wire.MaxFrameSize + 100)
	buf := make([]byte, 0, 4000)
	var want, got []byte
	for i := range 5000 {
		p := bytes.Repeat([]byte{byte(i)}, 1+i%1500)
		q.Push(p)
		want = wire.AppendFrame(want, p)
		if i%2 == 0 {
			b := q.Pop(buf[:0], nil)
			got = append(got, b.Buf...)
		}
	}
	for {
		b := q.Pop(buf[:0], nil)
		if len(b.Buf) == 0 {
			break
		}
		got = append(got, b.Buf...)
	}
	if q.Stats().Dropped != 0 {
		t.Fatalf("dropped %d", q.Stats().Dropped)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("datagrams came out changed or out of order across the ring's wrap")
	}
}

func TestQueueRejects(t *testing.T) {
	q := newQueue(0)
	for _, n := range []int{0, wire.MaxDatagram + 1} {
		if _, ok := q.Push(make([]byte, n)); ok {
			t.Errorf("Push of %d bytes accepted", n)
		}
	}
	if _, ok := q.Push(make([]byte, wire.MaxDatagram)); !ok {
		t.Error("largest datagram refused")
	}
	if s := q.Stats(); s.Rejected != 2 || s.Queued != 1 {
		t.Fatalf("stats = %+v", s)
	}
}

func TestQueueFlushMarkers(t *testing.T) {
	q := newQueue(wire.MaxFrameSize)
	q.Push([]byte("a"))
	if ticket := q.PushFlush(); ticket != 1 {
		t.Fatalf("first flush's ticket %d", ticket)
	}
	q.Push([]byte("b"))
	b := q.Pop(make([]byte, 0, 100), nil)
	if want := wire.AppendFrame(wire.AppendFrame(wire.AppendFrame(nil, []byte("a")), nil), []byte("b")); !bytes.Equal(b.Buf, want) || !slices.Equal(b.Flushes, []uint64{1}) || b.Datagrams != 2 {
		t.Fatalf("pop = %q (flushes %v)", b.Buf, b.Flushes)
	}
	// A flush marker pushed out by drop-oldest is still owed to its
	// waiter: one request goes first, with its ticket (the newest owed).
	q.PushFlush()
	q.PushFlush()
	for range 100 {
		q.Push(make([]byte, 1000))
	}
	b = q.Pop(make([]byte, 0, 2*wire.MaxFrameSize), nil)
	if !slices.Equal(b.Flushes, []uint64{3}) || !bytes.HasPrefix(b.Buf, []byte{0, 0, 0, 0}) || bytes.HasPrefix(b.Buf[4:], []byte{0, 0, 0, 0}) {
		t.Fatalf("owed flush not emitted first, once: flushes %v, starts %x", b.Flushes, b.Buf[:8])
	}
	if b := q.Pop(make([]byte, 0, 2*wire.MaxFrameSize), nil); len(b.Flushes) != 0 {
		t.Fatalf("the owed flush asked twice: %v", b.Flushes)
	}
	// Raw pops take one payload at a time, without framing.
	q.Push([]byte("x"))
	q.Push([]byte("y"))
	for _, want := range []string{"x", "y", ""} {
		if b := q.PopPayload(make([]byte, 0, 100), nil); string(b.Buf) != want {
			t.Fatalf("raw pop = %q, want %q", b.Buf, want)
		}
	}
}

func TestQueuePushAllocs(t *testing.T) {
	q := newQueue(1 << 20)
	p := make([]byte, 1024)
	buf := make([]byte, 0, 256<<10)
	allocs := testing.AllocsPerRun(1000, func() {
		q.Push(p)
		q.Pop(buf[:0], nil)
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per datagram, want 0", allocs)
	}
}

func BenchmarkQueue(b *testing.B) {
	for _, size := range []int{64, 1024, 8192, 60000} {
		b.Run(fmt.Sprint(size), func(b *testing.B) {
			q := newQueue(4 << 20)
			p := make([]byte, size)
			buf := make([]byte, 0, 256<<10)
			b.SetBytes(int64(size))
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				q.Push(p)
				if i%16 == 15 {
					q.Pop(buf[:0], nil)
				}
			}
		})
	}
}

func TestForwarderLogsRefusedSize(t *testing.T) {
	var log bytes.Buffer
	fw := newForwarder(Config{Logger: slog.New(slog.NewTextHandler(&log, nil))})
	fw.SendBatch([][]byte{[]byte("ok"), make([]byte, wire.MaxDatagram+1)})
	if !strings.Contains(log.String(), "size=65536") {
		t.Fatalf("refused datagram logged without its size: %s", log.String())
	}
}

// TestQueueGrowsAndShrinks: a queue uses a small part of its ring while it
// holds little, grows it (moving wrapped records) as it holds more, up to
// all of it, and goes back; through all of it, what comes out is what a
// plain FIFO with drop-oldest gives, for capacities that are and are not
// powers of two.
func TestQueueGrowsAndShrinks(t *testing.T) {
	for _, capacity := range []int{wire.MaxFrameSize, 300 << 10, 1 << 20, 3<<20 + 12345} {
		t.Run(fmt.Sprint(capacity), func(t *testing.T) {
			q := newQueue(capacity)
			var model [][]byte // the datagrams held, oldest first
			held := 0          // their bytes, framing included
			rng := uint64(capacity)
			next := func(n uint64) uint64 { rng = rng*6364136223846793005 + 1442695040888963407; return rng >> 33 % n }
			buf := make([]byte, 0, 3*wire.MaxFrameSize)
			grew := false
			for i := range 20000 {
				// Bursts of big datagrams fill it; long runs of small ones
				// with pops in between keep it nearly empty.
				size := 2 + int(next(200))
				if i/2000%2 == 1 {
					size = 2 + int(next(wire.MaxDatagram-1))
				}
				p := bytes.Repeat([]byte{byte(i)}, size)
				binary.BigEndian.PutUint16(p, uint16(i))
				q.Push(p)
				model = append(model, p)
				for held += wire.FrameHeaderSize + size; held > q.Cap(); model = model[1:] {
					held -= wire.FrameHeaderSize + len(model[0])
				}
				grew = grew || q.size > ringStart
				if q.size > q.Cap() || q.used > q.size {
					t.Fatalf("ring part %d, holding %d, of %d", q.size, q.used, q.Cap())
				}
				if next(3) != 0 {
					continue
				}
				b := q.Pop(buf[:0], nil)
				for rec := b.Buf; len(rec) > 0; {
					n := int(binary.BigEndian.Uint32(rec))
					if !bytes.Equal(rec[wire.FrameHeaderSize:wire.FrameHeaderSize+n], model[0]) {
						t.Fatalf("step %d: popped a datagram of %d bytes that is not the oldest held", i, n)
					}
					held -= wire.FrameHeaderSize + n
					model, rec = model[1:], rec[wire.FrameHeaderSize+n:]
				}
			}
			if capacity > ringStart && !grew {
				t.Fatal("the ring's part in use never grew")
			}
			q.grown = time.Time{} // as if it had not grown for ringSettle
			for len(q.Pop(buf[:0], nil).Buf) > 0 {
			}
			if q.size != min(capacity, ringStart) || q.head != 0 {
				t.Fatalf("empty queue uses %d bytes from %d, want %d from 0", q.size, q.head, min(capacity, ringStart))
			}
		})
	}
}

// TestRetainingQueueGrowsAndShrinks: the same for a retaining queue, whose
// popped datagrams stay until confirmed and come again after a rewind.
func TestRetainingQueueGrowsAndShrinks(t *testing.T) {
	for _, capacity := range []int{300 << 10, 3<<20 + 12345} {
		t.Run(fmt.Sprint(capacity), func(t *testing.T) {
			q := newRetainingQueue(capacity)
			type rec struct {
				seq uint64
				p   []byte
			}
			var model []rec // held, oldest first; the first popped are sent
			popped, held := 0, 0
			rng := uint64(capacity)
			next := func(n uint64) uint64 { rng = rng*6364136223846793005 + 1442695040888963407; return rng >> 33 % n }
			buf := make([]byte, 0, 3*wire.MaxFrameSize)
			for i := range 20000 {
				size := 2 + int(next(200))
				if i/2000%2 == 1 {
					size = 2 + int(next(wire.MaxDatagram-1))
				}
				p := bytes.Repeat([]byte{byte(i)}, size)
				q.Push(p)
				model = append(model, rec{uint64(i + 1), p})
				for held += wire.FrameHeaderSize + size; held > q.Cap(); model = model[1:] {
					held -= wire.FrameHeaderSize + len(model[0].p)
					popped = max(popped-1, 0)
				}
				switch next(6) {
				case 0, 1:
					b := q.Pop(buf[:0], nil)
					if b.Datagrams > 0 && b.FirstSeq != model[popped].seq {
						t.Fatalf("step %d: batch numbered from %d, want %d", i, b.FirstSeq, model[popped].seq)
					}
					for r := b.Buf; len(r) > 0; popped++ {
						n := int(binary.BigEndian.Uint32(r))
						if want := model[popped]; !bytes.Equal(r[wire.FrameHeaderSize:wire.FrameHeaderSize+n], want.p) {
							t.Fatalf("step %d: popped %d bytes, not datagram %d", i, n, want.seq)
						}
						r = r[wire.FrameHeaderSize+n:]
					}
				case 2:
					if popped > 0 { // the host confirms what was sent
						q.Ack(model[popped-1].seq + 1)
						for _, r := range model[:popped] {
							held -= wire.FrameHeaderSize + len(r.p)
						}
						model, popped = model[popped:], 0
					}
				case 3:
					if next(20) == 0 { // a new connection: everything unconfirmed again
						if first := q.Rewind(); len(model) > 0 && first != model[0].seq {
							t.Fatalf("step %d: rewind starts at %d, want %d", i, first, model[0].seq)
						}
						popped = 0
					}
				}
				if q.size > q.Cap() || q.used > q.size || q.used != held {
					t.Fatalf("step %d: ring part %d, holding %d (model %d), of %d", i, q.size, q.used, held, q.Cap())
				}
			}
		})
	}
}

// TestRetainingQueue: what Pop takes stays until the host confirms it; a
// rewind takes it again, numbered as before; a flush marker leaves only
// when answered; drop-oldest leaves a gap the next Pop's FirstSeq shows.
func TestRetainingQueue(t *testing.T) {
	q := newRetainingQueue(0)
	dg := func(i int) []byte { return bytes.Repeat([]byte{byte(i)}, 100) }
	for i := range 3 {
		q.Push(dg(i))
	}
	ticket := q.PushFlush()
	q.Push(dg(3))
	buf := make([]byte, 0, 4*wire.MaxFrameSize)
	b := q.Pop(buf, nil)
	if b.Datagrams != 4 || !slices.Equal(b.Flushes, []uint64{ticket}) || b.FirstSeq != 1 {
		t.Fatalf("first pop = %+v, want 4 datagrams, 1 flush, from 1", b)
	}
	if b := q.Pop(buf, nil); b.Datagrams != 0 || len(b.Flushes) != 0 {
		t.Fatalf("a second pop took %+v: what was sent must wait for confirmation, not go again", b)
	}
	if n := q.Ack(3); n != 2 {
		t.Fatalf("Ack(3) removed %d, want datagrams 1 and 2", n)
	}
	if first := q.Rewind(); first != 3 {
		t.Fatalf("Rewind = %d, want 3 (the first unconfirmed)", first)
	}
	if b := q.Pop(buf, nil); b.Datagrams != 2 || !slices.Equal(b.Flushes, []uint64{ticket}) || b.FirstSeq != 3 {
		t.Fatalf("pop after rewind = %+v, want datagrams 3 and 4 and the marker again, from 3", b)
	}
	if n := q.Ack(5); n != 1 {
		t.Fatalf("Ack(5) removed %d: it must stop at the unanswered marker", n)
	}
	q.AckFlush(ticket)
	if n := q.Ack(5); n != 1 {
		t.Fatalf("Ack(5) after the answer removed %d, want 1", n)
	}
	if s := q.Stats(); s.Queued != 0 || s.Unacked != 0 || s.QueuedBytes != 0 || s.Acked != 4 {
		t.Fatalf("stats %+v, want an empty queue and 4 confirmed", s)
	}
	// Fill past the size while nothing is in flight: the oldest go, and
	// the next pop starts after the gap.
	// (The queue is never smaller than one largest frame: 10 of these fit.)
	big := bytes.Repeat([]byte{'b'}, 6000)
	for range 12 {
		q.Push(big)
	}
	if b := q.Pop(buf, nil); b.FirstSeq != 5+2 || b.Datagrams != 10 {
		t.Fatalf("pop after 2 drops: %d datagrams from %d, want 10 from 7", b.Datagrams, b.FirstSeq)
	}
}

// TestRetainingQueueDroppedMarkers: a flush marker that drop-oldest takes
// out of the ring, sent or not, is owed: asked again first on every new
// connection until an answer reaches its ticket. The answer to a dropped
// marker does not take a later marker, whose flush would then pass
// unconfirmed; the answer to a later one answers it too.
func TestRetainingQueueDroppedMarkers(t *testing.T) {
	buf := make([]byte, 0, 4*wire.MaxFrameSize)
	big := bytes.Repeat([]byte{'b'}, 6000)
	fill := func(q *queue) {
		for range 11 { // more than fits: what is held first is dropped
			q.Push(big)
		}
	}
	popAll := func(q *queue) (flushes []uint64) {
		for b := q.Pop(buf, nil); b.Datagrams+len(b.Flushes) > 0; b = q.Pop(buf, nil) {
			flushes = append(flushes, b.Flushes...)
		}
		return flushes
	}
	for _, tt := range []struct {
		name string
		sent bool // the marker went out before it was dropped
	}{{"sent", true}, {"owed", false}} {
		t.Run(tt.name, func(t *testing.T) {
			q := newRetainingQueue(0)
			first := q.PushFlush()
			if tt.sent {
				if got := popAll(q); !slices.Equal(got, []uint64{first}) {
					t.Fatalf("popped flushes %v, want %d", got, first)
				}
			}
			fill(q)
			later := q.PushFlush()
			want := []uint64{later}
			if !tt.sent {
				want = []uint64{first, later} // the owed one first
			}
			if got := popAll(q); !slices.Equal(got, want) {
				t.Fatalf("popped flushes %v, want %v", got, want)
			}
			// The connection is lost unanswered: both are asked again.
			q.Rewind()
			if got := popAll(q); !slices.Equal(got, []uint64{first, later}) {
				t.Fatalf("after a rewind, flushes %v, want %d (owed) then %d", got, first, later)
			}
			q.Ack(1 << 40)
			q.AckFlush(first)
			if s := q.Stats(); s.QueuedBytes != wire.FrameHeaderSize {
				t.Fatalf("after the dropped marker's answer %d bytes held, want the later marker's %d", s.QueuedBytes, wire.FrameHeaderSize)
			}
			q.AckFlush(later)
			if s := q.Stats(); s.QueuedBytes != 0 {
				t.Fatalf("after both answers %d bytes held, want 0", s.QueuedBytes)
			}
			if q.Rewind(); len(popAll(q)) != 0 {
				t.Fatal("an answered flush asked again")
			}
		})
	}
	// An answer to a later flush answers the owed one before it.
	q := newRetainingQueue(0)
	first := q.PushFlush()
	fill(q)
	later := q.PushFlush()
	popAll(q)
	q.Ack(1 << 40)
	q.AckFlush(later)
	if q.Rewind(); len(popAll(q)) != 0 || q.Stats().QueuedBytes != 0 {
		t.Fatalf("flush %d asked again after %d was answered", first, later)
	}
}

// TestCountUnread: what a stop leaves in the socket of what was waiting
// when it began is counted, not lost; what came in after is not read (but
// for the rest of a batch). A datagram that came in before the socket
// stamped what it takes in (the kernel stamps it as it is read) was
// waiting, and is counted too.
func TestCountUnread(t *testing.T) {
	f := newForwarder(Config{Logger: slog.New(slog.DiscardHandler)})
	t.Run("stamped", func(t *testing.T) {
		pc, c := packetPair(t, "udp")
		sr := readerFor(pc) // from here the kernel stamps what comes in
		// The kernel turns stamping on a moment later: until then what
		// comes in is stamped as it is read.
		testutil.Eventually(t, 10*time.Second, "stamping on", func() bool {
			sent := time.Now()
			c.Write([]byte("probe"))
			time.Sleep(time.Millisecond)
			sr.cutoff(sent) // late: stamped as it came in, not as it is read
			pc.SetReadDeadline(time.Now().Add(time.Second))
			return sr.read(func([][]byte) {}) == errLate
		})
		for range 10 {
			c.Write([]byte("waiting"))
		}
		time.Sleep(time.Millisecond)
		began := time.Now()
		for range 10 {
			c.Write([]byte("late"))
		}
		time.Sleep(time.Millisecond)
		sr.cutoff(began)
		before := f.Stats().SocketDropped
		f.countUnread(context.Background(), pc, sr)
		if got := f.Stats().SocketDropped - before; got < 10 || got >= 10+readBatch {
			t.Fatalf("counted %d, want the 10 left in the socket when the stop began (and the rest of a batch of %d)", got, readBatch)
		}
	})
	t.Run("before the socket stamped", func(t *testing.T) {
		pc, c := packetPair(t, "unixgram") // stamped as sent, if the socket asks
		for range 10 {
			c.Write([]byte("waiting"))
		}
		sr := readerFor(pc)
		sr.cutoff(time.Now())
		before := f.Stats().SocketDropped
		f.countUnread(context.Background(), pc, sr)
		if got := f.Stats().SocketDropped - before; got != 10 {
			t.Fatalf("counted %d, want the 10 left in the socket", got)
		}
	})
	t.Run("the stop's time is up", func(t *testing.T) {
		pc, c := packetPair(t, "unixgram")
		for range 10 {
			c.Write([]byte("waiting"))
		}
		sr := readerFor(pc)
		sr.cutoff(time.Now())
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		before := f.Stats().SocketDropped
		f.countUnread(ctx, pc, sr) // the stop keeps its bound: nothing read
		if got := f.Stats().SocketDropped - before; got != 0 {
			t.Fatalf("counted %d after the stop's time was up", got)
		}
	})
}

// packetPair is a datagram socket and a client connected to it.
func packetPair(t *testing.T, network string) (net.PacketConn, net.Conn) {
	addr := "127.0.0.1:0"
	if network == "unixgram" {
		addr = filepath.Join(t.TempDir(), "in")
	}
	pc, err := net.ListenPacket(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	c, err := net.Dial(network, pc.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return pc, c
}
