package hostrelay

import (
	"context"
	"encoding/binary"
	"errors"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/katatrace/katatrace/guestid"
	"github.com/katatrace/katatrace/internal/testutil"
	"github.com/katatrace/katatrace/wire"
)

// tcpHost is a host relay on loopback TCP, where every connection is a
// guest of its own (all local processes share 127.0.0.1).
func tcpHost(t *testing.T, cfg ServerConfig) (string, *Server) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Sink == nil {
		cfg.Sink = &memSink{}
	}
	cfg.Kind, cfg.Logger = wire.KindJaeger, testLogger(t)
	srv := NewServer(cfg)
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln, "tcp://"+ln.Addr().String()) }()
	t.Cleanup(func() {
		_ = srv.Shutdown(context.Background())
		<-done
	})
	return ln.Addr().String(), srv
}

// flooder writes 1 KiB v1 frames to addr until stop, counting the bytes
// the kernel took.
func flooder(t *testing.T, addr string, stop <-chan struct{}, wrote *atomic.Int64) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Error(err)
		return
	}
	defer c.Close()
	b := wire.AppendHello(nil, wire.KindJaeger)
	for range 16 {
		b = wire.AppendFrame(b, make([]byte, 1024))
	}
	if _, err := c.Write(b[:wire.HelloSize]); err != nil {
		t.Error(err)
		return
	}
	for {
		select {
		case <-stop:
			return
		default:
		}
		_ = c.SetWriteDeadline(time.Now().Add(50 * time.Millisecond))
		n, err := c.Write(b[wire.HelloSize:])
		wrote.Add(int64(n))
		if err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
			return
		}
	}
}

// TestBudgetPacesFloodersAndSparesTheQuiet: four guests flood a host relay
// whose guests have a small budget while a quiet one sends 100 datagrams:
// the quiet guest is confirmed every one and never waits, the flooders are
// read no faster than their budgets allow, and they still get their share.
func TestBudgetPacesFloodersAndSparesTheQuiet(t *testing.T) {
	const rate, burst = 256 << 10, 64 << 10
	sink := &memSink{}
	addr, srv := tcpHost(t, ServerConfig{Sink: sink, GuestRate: rate, GuestBurst: burst})
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var wrote atomic.Int64
	for range 4 {
		wg.Go(func() { flooder(t, addr, stop, &wrote) })
	}
	testutil.Eventually(t, 10*time.Second, "the flood under way", func() bool { return srv.Stats().Paused > 0 })
	// From here the guests are known to compete: each is held to its budget.
	paced := time.Now()
	before := map[string]uint64{}
	for _, g := range srv.Guests() {
		before[g.Guest] = g.Bytes
	}

	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	b := wire.AppendHelloV2(nil, wire.KindJaeger, 42, 1)
	for i := range 100 {
		b = wire.AppendFrame(b, payload(42, i, 200))
	}
	if _, err := c.Write(wire.AppendFrame(b, nil)); err != nil {
		t.Fatal(err)
	}
	acked := readAcks(t, c)
	close(stop)
	wg.Wait()
	elapsed := time.Since(paced)

	var quiet, flood GuestStats
	for _, g := range srv.Guests() {
		switch {
		case g.Bytes == 100*200:
			quiet = g
		case g.Bytes > flood.Bytes:
			flood = g
		}
	}
	t.Logf("quiet %+v; busiest flooder %+v; flooders wrote %d bytes; %v paced", quiet, flood, wrote.Load(), elapsed)
	if acked != 101 || quiet.Datagrams != 100 {
		t.Fatalf("quiet guest confirmed up to %d, %d handed on; want 101 and 100", acked, quiet.Datagrams)
	}
	if quiet.Paused != 0 {
		t.Fatalf("the quiet guest waited %v for a budget it never exceeded", quiet.Paused)
	}
	if flood.Datagrams == 0 || flood.Paused == 0 {
		t.Fatalf("the flooder was not served within a budget: %+v", flood)
	}
	// An upper bound only: a slow machine reads less, never more.
	if read, limit := flood.Bytes-before[flood.Guest], uint64(burst+rate*elapsed.Seconds()+maxBatchBytes); read > limit {
		t.Fatalf("a flooder was read %d bytes in %v; its budget allows %d", read, elapsed, limit)
	}
}

// readAcks reads a v2 host's confirmations up to its flush answer.
func readAcks(t *testing.T, c net.Conn) (acked uint64) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(20 * time.Second))
	fr := wire.NewFrameReader(wire.NewStreamReader(c))
	for {
		p, _, err := fr.NextFrame()
		if err != nil {
			t.Fatalf("reading the host's answers: %v", err)
		}
		if len(p) == 0 {
			return acked
		}
		acked = binary.BigEndian.Uint64(p)
	}
}

// TestLoneGuestIsNotPaced: a budget shares the sink between guests; a
// guest sending alone is never slowed, however far over it.
func TestLoneGuestIsNotPaced(t *testing.T) {
	addr, srv := tcpHost(t, ServerConfig{GuestRate: 64 << 10, GuestBurst: 64 << 10})
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	b := wire.AppendHelloV2(nil, wire.KindJaeger, 7, 1)
	for i := range 2000 {
		b = wire.AppendFrame(b, payload(7, i, 1024)) // 2 MiB: 32 s of budget
	}
	if _, err := c.Write(wire.AppendFrame(b, nil)); err != nil {
		t.Fatal(err)
	}
	if acked := readAcks(t, c); acked != 2001 {
		t.Fatalf("confirmed up to %d, want 2001", acked)
	}
	if s := srv.Stats(); s.Datagrams != 2000 || s.Paused != 0 {
		t.Fatalf("handed on %d (want 2000), paused %v (want 0)", s.Datagrams, s.Paused)
	}
}

// refusingSink refuses every other datagram.
type refusingSink struct {
	memSink
	n atomic.Int64
}

func (s *refusingSink) Send(p []byte, from guestid.ID) error {
	if s.n.Add(1)%2 == 0 {
		return errors.New("refused")
	}
	return s.memSink.Send(p, from)
}

// TestGuestLearnsWhatTheSinkRefused: a v2 guest relay whose host's sink
// refuses half its datagrams is told how many, so it never reports them as
// delivered; a gap in its numbers (its own drops) is counted by the host.
func TestGuestLearnsWhatTheSinkRefused(t *testing.T) {
	path := filepath.Join(testutil.SockDir(t), "h_6831")
	sink := &refusingSink{}
	h := startHost(t, path, sink)
	g := startGuest(t, path, 1<<20)
	for i := range 10 {
		g.Send(payload(1, i, 100))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := g.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if s := g.Stats(); s.HostDropped != 5 || s.Queue.Acked != 10 {
		t.Fatalf("guest: host dropped %d, confirmed %d; want 5 and 10", s.HostDropped, s.Queue.Acked)
	}
	if s := h.srv.Stats(); s.SinkErrors != 5 || s.Datagrams != 10 {
		t.Fatalf("host: %+v", s)
	}

	// A v2 guest that skips numbers 3..5 (its queue dropped them).
	c := dialHost(t, path, nil)
	b := wire.AppendHelloV2(nil, wire.KindJaeger, 99, 1)
	b = wire.AppendFrame(wire.AppendFrame(b, []byte("a")), []byte("b"))
	b = wire.AppendFrame(wire.AppendSeq(b, 6), []byte("f"))
	if _, err := c.Write(wire.AppendFrame(b, nil)); err != nil {
		t.Fatal(err)
	}
	if acked := readAcks(t, c); acked != 7 {
		t.Fatalf("confirmed up to %d, want 7", acked)
	}
	if n := h.srv.Stats().GuestDropped; n != 3 {
		t.Fatalf("guest drops counted %d, want 3", n)
	}
}

func TestBudget(t *testing.T) {
	never := func(time.Time) bool { return false }
	always := func(time.Time) bool { return true }
	var b budget
	b.init(1<<20, 1<<17)
	now := time.Unix(1000, 0) // the clock stands still: every wait is exact
	if w := b.take(1<<17, now, always); w != 0 {
		t.Fatalf("the burst waited %v", w)
	}
	if w := b.take(1<<19, now, never); w != 0 {
		t.Fatalf("uncontended: waited %v", w)
	}
	// Alone, the guest ran no further ahead than its burst: half a
	// second's bytes more, once guests compete, wait half a second.
	if w := b.take(1<<19, now, always); w != 500*time.Millisecond {
		t.Fatalf("half a second's bytes over budget: wait %v", w)
	}
	// The budget refills with time: half a second later the same wait.
	if w := b.take(1<<19, now.Add(500*time.Millisecond), always); w != 500*time.Millisecond {
		t.Fatalf("after half a second's refill: wait %v", w)
	}
	var off budget
	off.init(0, 0)
	if !off.disabled {
		t.Fatal("a zero rate is no budget")
	}
}

// TestShutdownDoesNotWaitOutAPause: guests that owe their budget a minute
// (a tiny rate) do not hold a host relay's shutdown for that minute.
func TestShutdownDoesNotWaitOutAPause(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := NewServer(ServerConfig{Kind: wire.KindJaeger, Sink: &memSink{}, Logger: testLogger(t), GuestRate: 1 << 10, GuestBurst: 64 << 10})
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln, "tcp://"+ln.Addr().String()) }()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var wrote atomic.Int64
	for range 3 {
		wg.Go(func() { flooder(t, ln.Addr().String(), stop, &wrote) })
	}
	defer func() { close(stop); wg.Wait() }()
	// Past their bursts (64 KiB each), the guests owe about a minute.
	testutil.Eventually(t, 10*time.Second, "the guests paced", func() bool { return srv.Stats().Paused > time.Second })
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		done <- srv.Shutdown(ctx)
	}()
	select {
	case err := <-done:
		// The flooders never go quiet: the drain runs to its end, no later.
		if err != nil && !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("shutdown: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("shutdown waited out the guests' pauses (a minute each)")
	}
	<-served
}
