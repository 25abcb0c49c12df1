package hostrelay

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/katatrace/katatrace/endpoint"
	"github.com/katatrace/katatrace/guestrelay"
	"github.com/katatrace/katatrace/internal/jaegertest"
	"github.com/katatrace/katatrace/internal/testutil"
	"github.com/katatrace/katatrace/sink"
	"github.com/katatrace/katatrace/wire"
)

// v2Peer speaks to a host relay as a v2 guest, by hand.
func v2Peer(t *testing.T, path string, session, first uint64, payloads ...[]byte) (acked uint64) {
	t.Helper()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	b := wire.AppendHelloV2(nil, wire.KindJaeger, session, first)
	for _, p := range payloads {
		b = wire.AppendFrame(b, p)
	}
	b = wire.AppendFrame(b, nil) // flush: the host confirms, then answers
	if _, err := c.Write(b); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	var h [wire.FrameHeaderSize + 16]byte
	for {
		if _, err := io.ReadFull(c, h[:wire.FrameHeaderSize]); err != nil {
			t.Fatalf("reading the host's answers: %v", err)
		}
		n := binary.BigEndian.Uint32(h[:])
		if n == 0 {
			return acked
		}
		if n != 8 && n != 16 {
			t.Fatalf("the host sent a %d-byte frame", n)
		}
		if _, err := io.ReadFull(c, h[wire.FrameHeaderSize:wire.FrameHeaderSize+n]); err != nil {
			t.Fatal(err)
		}
		acked = binary.BigEndian.Uint64(h[wire.FrameHeaderSize:])
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

// TestHostConfirmsAQuietGuest: a v2 guest that sends datagrams and then
// nothing, no flush either, still gets them confirmed (within
// confirmDelay of the host catching up); and what it sent in one write
// is confirmed once, not per datagram.
func TestHostConfirmsAQuietGuest(t *testing.T) {
	path := filepath.Join(testutil.SockDir(t), "h_6831")
	sink := &memSink{}
	startHost(t, path, sink)
	b := wire.AppendHelloV2(nil, wire.KindJaeger, 42, 1)
	for i := range 50 {
		b = wire.AppendFrame(b, []byte{byte(i), 'x'})
	}
	c := dialHost(t, path, b)
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	var h [wire.FrameHeaderSize + 8]byte
	confirmations := 0
	for {
		if _, err := io.ReadFull(c, h[:]); err != nil {
			t.Fatalf("no confirmation of datagrams 1-50 (after %d): %v", confirmations, err)
		}
		confirmations++
		if n := binary.BigEndian.Uint32(h[:]); n != 8 {
			t.Fatalf("the host sent a %d-byte frame, want an 8-byte confirmation", n)
		}
		if next := binary.BigEndian.Uint64(h[wire.FrameHeaderSize:]); next == 51 {
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

// TestGuestToldWhatTheCollectorDidNotAccept: with the collector down, a
// v2 guest's flush is answered with how many of its datagrams the
// collector has not accepted, the guest says so (NotAcceptedError), and
// the host counts it; once the collector is back, the held batches are
// delivered and a flush is answered clean.
func TestGuestToldWhatTheCollectorDidNotAccept(t *testing.T) {
	var up atomic.Bool
	var accepted atomic.Int64
	col := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		if !up.Load() {
			http.Error(w, "collector down", http.StatusServiceUnavailable)
			return
		}
		accepted.Add(1)
	}))
	defer col.Close()
	cs := sink.NewCollectorSink(col.URL+"/api/traces", 1<<20, 1, 0, testLogger(t))
	defer cs.Close(context.Background())
	path := filepath.Join(testutil.SockDir(t), "h_6831")
	ln, err := endpoint.Listen(testutil.Must(endpoint.ParseAddr("unix://" + path)))
	if err != nil {
		t.Fatal(err)
	}
	srv := NewServer(ServerConfig{Kind: wire.KindJaeger, Sink: cs, Logger: testLogger(t), FlushTimeout: 300 * time.Millisecond})
	go func() { _ = srv.Serve(ln, "unix://"+path) }()
	defer srv.Shutdown(context.Background())

	g := startGuest(t, path, 1<<20)
	dgs := jaegertest.Capture(t, "agent", jaegertest.SmallTrace)
	for _, p := range dgs {
		g.Send(p)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	err = g.Flush(ctx)
	cancel()
	var na *guestrelay.NotAcceptedError
	if !errors.As(err, &na) || na.Datagrams != uint64(len(dgs)) {
		t.Fatalf("flush with the collector down: %v; want %d datagrams not accepted", err, len(dgs))
	}
	if st := g.Stats(); st.HostUnaccepted != uint64(len(dgs)) {
		t.Fatalf("guest stats say %d not accepted, want %d", st.HostUnaccepted, len(dgs))
	}
	if n := srv.Stats().FlushesNotAccepted; n == 0 {
		t.Fatal("the host counted no flush answered before its collector accepted")
	}
	if st := cs.Stats(); st.Up || st.Queued+st.InFlight == 0 || st.Retries == 0 {
		t.Fatalf("collector sink stats during the outage: %+v", st)
	}

	up.Store(true)
	_ = cs.Reopen() // retry now, not after the backoff
	ctx, cancel = context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := g.Flush(ctx); err != nil {
		t.Fatalf("flush with the collector back: %v", err)
	}
	if accepted.Load() != int64(len(dgs)) || g.Stats().HostUnaccepted != 0 || !cs.Stats().Up || cs.Stats().LastSuccess.IsZero() {
		t.Fatalf("collector accepted %d of %d; guest stats %+v; sink %+v", accepted.Load(), len(dgs), g.Stats(), cs.Stats())
	}
}
