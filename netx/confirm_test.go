package netx

import (
	"bytes"
	"encoding/binary"
	"io"
	"maps"
	"net"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/katatrace/katatrace/internal/testutil"
)

// TestRetainingQueue: what Pop takes stays until the host confirms it; a
// rewind takes it again, numbered as before; a flush marker leaves only
// when answered; drop-oldest leaves a gap the next Pop's FirstSeq shows.
func TestRetainingQueue(t *testing.T) {
	q := NewRetainingQueue(0)
	dg := func(i int) []byte { return bytes.Repeat([]byte{byte(i)}, 100) }
	for i := range 3 {
		q.Push(dg(i))
	}
	q.PushFlush()
	q.Push(dg(3))
	buf := make([]byte, 0, 4*MaxFrameSize)
	b := q.Pop(buf)
	if b.Datagrams != 4 || b.Flushes != 1 || b.FirstSeq != 1 {
		t.Fatalf("first pop = %+v, want 4 datagrams, 1 flush, from 1", b)
	}
	if b := q.Pop(buf); b.Datagrams != 0 || b.Flushes != 0 {
		t.Fatalf("a second pop took %+v: what was sent must wait for confirmation, not go again", b)
	}
	if n := q.Ack(3); n != 2 {
		t.Fatalf("Ack(3) removed %d, want datagrams 1 and 2", n)
	}
	if first := q.Rewind(); first != 3 {
		t.Fatalf("Rewind = %d, want 3 (the first unconfirmed)", first)
	}
	if b := q.Pop(buf); b.Datagrams != 2 || b.Flushes != 1 || b.FirstSeq != 3 {
		t.Fatalf("pop after rewind = %+v, want datagrams 3 and 4 and the marker again, from 3", b)
	}
	if n := q.Ack(5); n != 1 {
		t.Fatalf("Ack(5) removed %d: it must stop at the unanswered marker", n)
	}
	q.Answered()
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
	if b := q.Pop(buf); b.FirstSeq != 5+2 || b.Datagrams != 10 {
		t.Fatalf("pop after 2 drops: %d datagrams from %d, want 10 from 7", b.Datagrams, b.FirstSeq)
	}
}

// v2Peer speaks to a host relay as a v2 guest, by hand.
func v2Peer(t *testing.T, path string, session, first uint64, payloads ...[]byte) (acked uint64) {
	t.Helper()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	b := AppendHelloV2(nil, KindJaeger, session, first)
	for _, p := range payloads {
		b = AppendFrame(b, p)
	}
	b = AppendFrame(b, nil) // flush: the host confirms, then answers
	if _, err := c.Write(b); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	var h [FrameHeaderSize + 16]byte
	for {
		if _, err := io.ReadFull(c, h[:FrameHeaderSize]); err != nil {
			t.Fatalf("reading the host's answers: %v", err)
		}
		n := binary.BigEndian.Uint32(h[:])
		if n == 0 {
			return acked
		}
		if n != 8 && n != 16 {
			t.Fatalf("the host sent a %d-byte frame", n)
		}
		if _, err := io.ReadFull(c, h[FrameHeaderSize:FrameHeaderSize+n]); err != nil {
			t.Fatal(err)
		}
		acked = binary.BigEndian.Uint64(h[FrameHeaderSize:])
	}
}

// TestHostDropsDuplicates: a v2 guest that resends after a reconnect what
// the host had handed on already gets it confirmed, not handed on twice.
func TestHostDropsDuplicates(t *testing.T) {
	path := filepath.Join(testutil.SockDir(t), "h_6831")
	sink := &memSink{}
	h := startHost(t, path, sink)
	dg := func(i int) []byte { return []byte{byte(i)} }
	if acked := v2Peer(t, path, 77, 1, dg(1), dg(2), dg(3)); acked != 4 {
		t.Fatalf("confirmed up to %d, want 4", acked)
	}
	// Reconnect: 2 and 3 again (their confirmation "was lost"), then 4, 5.
	if acked := v2Peer(t, path, 77, 2, dg(2), dg(3), dg(4), dg(5)); acked != 6 {
		t.Fatalf("confirmed up to %d, want 6", acked)
	}
	// Another session numbers its own datagrams.
	v2Peer(t, path, 78, 1, dg(9))
	sink.mu.Lock()
	var got []byte
	for _, peer := range slices.Sorted(maps.Keys(sink.got)) { // #1, #2, #3: connection order
		for _, p := range sink.got[peer] {
			got = append(got, p[0])
		}
	}
	sink.mu.Unlock()
	if string(got) != string([]byte{1, 2, 3, 4, 5, 9}) || h.srv.Stats().Duplicates != 2 {
		t.Fatalf("sink got %v, %d duplicates dropped; want 1 2 3 4 5 9, and 2", got, h.srv.Stats().Duplicates)
	}
}

// TestRetainingQueueDroppedMarkerAnswer: a sent flush marker that
// drop-oldest takes out of the ring is still answered, first; that answer
// must not take a later marker, whose flush would then pass unconfirmed.
func TestRetainingQueueDroppedMarkerAnswer(t *testing.T) {
	q := NewRetainingQueue(0)
	buf := make([]byte, 0, 4*MaxFrameSize)
	q.PushFlush()
	if b := q.Pop(buf); b.Flushes != 1 {
		t.Fatalf("pop = %+v, want the marker", b)
	}
	big := bytes.Repeat([]byte{'b'}, 6000)
	for range 11 { // more than fits: the sent marker is dropped
		q.Push(big)
	}
	q.PushFlush()
	for b := q.Pop(buf); b.Datagrams+b.Flushes > 0; b = q.Pop(buf) {
	}
	q.Ack(1 << 40)
	q.Answered() // the dropped marker's answer
	if s := q.Stats(); s.QueuedBytes != FrameHeaderSize {
		t.Fatalf("after the dropped marker's answer %d bytes held, want the later marker's %d", s.QueuedBytes, FrameHeaderSize)
	}
	q.Answered()
	if s := q.Stats(); s.QueuedBytes != 0 {
		t.Fatalf("after both answers %d bytes held, want 0", s.QueuedBytes)
	}
}

// TestHostConfirmsAQuietGuest: a v2 guest that sends datagrams and then
// nothing, no flush either, still gets them confirmed (within
// confirmDelay of the host catching up); and what it sent in one write
// is confirmed once, not per datagram.
func TestHostConfirmsAQuietGuest(t *testing.T) {
	path := filepath.Join(testutil.SockDir(t), "h_6831")
	sink := &memSink{}
	startHost(t, path, sink)
	b := AppendHelloV2(nil, KindJaeger, 42, 1)
	for i := range 50 {
		b = AppendFrame(b, []byte{byte(i), 'x'})
	}
	c := dialHost(t, path, b)
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	var h [FrameHeaderSize + 8]byte
	confirmations := 0
	for {
		if _, err := io.ReadFull(c, h[:]); err != nil {
			t.Fatalf("no confirmation of datagrams 1-50 (after %d): %v", confirmations, err)
		}
		confirmations++
		if n := binary.BigEndian.Uint32(h[:]); n != 8 {
			t.Fatalf("the host sent a %d-byte frame, want an 8-byte confirmation", n)
		}
		if next := binary.BigEndian.Uint64(h[FrameHeaderSize:]); next == 51 {
			break
		}
	}
	if confirmations > 2 {
		t.Errorf("%d confirmations for one write of 50 datagrams: want them coalesced", confirmations)
	}
	sink.mu.Lock()
	defer sink.mu.Unlock()
	if n := len(slices.Concat(slices.Collect(maps.Values(sink.got))...)); n != 50 {
		t.Errorf("sink got %d datagrams, want 50", n)
	}
}
