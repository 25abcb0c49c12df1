package netx

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"log/slog"
	"strings"
	"testing"
)

func TestQueueDropOldest(t *testing.T) {
	q := NewQueue(MaxFrameSize) // the smallest allowed size
	p := make([]byte, 1000)
	fit := MaxFrameSize / (FrameHeaderSize + len(p))
	for i := range fit + 10 {
		binary.BigEndian.PutUint32(p, uint32(i))
		q.Push(p)
	}
	s := q.Stats()
	if s.Dropped != 10 || s.DroppedBytes != 10000 || s.Queued != fit || s.Enqueued != uint64(fit+10) {
		t.Fatalf("stats = %+v, want 10 dropped and %d queued", s, fit)
	}
	b := q.Pop(make([]byte, 0, 2*MaxFrameSize))
	if b.Datagrams != fit || len(b.Buf) != fit*(FrameHeaderSize+len(p)) {
		t.Fatalf("pop took %d datagrams, %d bytes", b.Datagrams, len(b.Buf))
	}
	// The survivors are the newest, in order.
	for i := range fit {
		rec := b.Buf[i*(FrameHeaderSize+len(p)):]
		if n := binary.BigEndian.Uint32(rec); n != uint32(len(p)) {
			t.Fatalf("record %d has length %d", i, n)
		}
		if seq := binary.BigEndian.Uint32(rec[FrameHeaderSize:]); seq != uint32(10+i) {
			t.Fatalf("record %d is datagram %d, want %d", i, seq, 10+i)
		}
	}
}

func TestQueueWrapAndBatches(t *testing.T) {
	q := NewQueue(MaxFrameSize + 100)
	buf := make([]byte, 0, 4000)
	var want, got []byte
	for i := range 5000 {
		p := bytes.Repeat([]byte{byte(i)}, 1+i%1500)
		q.Push(p)
		want = AppendFrame(want, p)
		if i%2 == 0 {
			b := q.Pop(buf[:0])
			got = append(got, b.Buf...)
		}
	}
	for {
		b := q.Pop(buf[:0])
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
	q := NewQueue(0)
	for _, n := range []int{0, MaxDatagram + 1} {
		if _, ok := q.Push(make([]byte, n)); ok {
			t.Errorf("Push of %d bytes accepted", n)
		}
	}
	if _, ok := q.Push(make([]byte, MaxDatagram)); !ok {
		t.Error("largest datagram refused")
	}
	if s := q.Stats(); s.Rejected != 2 || s.Queued != 1 {
		t.Fatalf("stats = %+v", s)
	}
}

func TestQueueFlushMarkers(t *testing.T) {
	q := NewQueue(MaxFrameSize)
	q.Push([]byte("a"))
	q.PushFlush()
	q.Push([]byte("b"))
	b := q.Pop(make([]byte, 0, 100))
	if want := frames([]byte("a"), nil, []byte("b")); !bytes.Equal(b.Buf, want) || b.Flushes != 1 || b.Datagrams != 2 {
		t.Fatalf("pop = %q (%d flushes)", b.Buf, b.Flushes)
	}
	// A flush marker pushed out by drop-oldest is still owed to its waiter.
	q.PushFlush()
	for range 100 {
		q.Push(make([]byte, 1000))
	}
	b = q.Pop(make([]byte, 0, 2*MaxFrameSize))
	if b.Flushes != 1 || !bytes.HasPrefix(b.Buf, []byte{0, 0, 0, 0}) {
		t.Fatalf("owed flush not emitted first: %d flushes, starts %x", b.Flushes, b.Buf[:8])
	}
	// Raw pops take one payload at a time, without framing.
	q.Push([]byte("x"))
	q.Push([]byte("y"))
	for _, want := range []string{"x", "y", ""} {
		if b := q.PopPayload(make([]byte, 0, 100)); string(b.Buf) != want {
			t.Fatalf("raw pop = %q, want %q", b.Buf, want)
		}
	}
}

func TestQueuePushAllocs(t *testing.T) {
	q := NewQueue(1 << 20)
	p := make([]byte, 1024)
	buf := make([]byte, 0, 256<<10)
	allocs := testing.AllocsPerRun(1000, func() {
		q.Push(p)
		q.Pop(buf[:0])
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per datagram, want 0", allocs)
	}
}

func BenchmarkQueue(b *testing.B) {
	for _, size := range []int{64, 1024, 8192, 60000} {
		b.Run(fmt.Sprint(size), func(b *testing.B) {
			q := NewQueue(4 << 20)
			p := make([]byte, size)
			buf := make([]byte, 0, 256<<10)
			b.SetBytes(int64(size))
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				q.Push(p)
				if i%16 == 15 {
					q.Pop(buf[:0])
				}
			}
		})
	}
}

func TestForwarderLogsRefusedSize(t *testing.T) {
	var log bytes.Buffer
	fw := NewForwarder(ForwarderConfig{Logger: slog.New(slog.NewTextHandler(&log, nil))})
	fw.SendBatch([][]byte{[]byte("ok"), make([]byte, MaxDatagram+1)})
	if !strings.Contains(log.String(), "size=65536") {
		t.Fatalf("refused datagram logged without its size: %s", log.String())
	}
}
