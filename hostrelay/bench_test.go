package hostrelay

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/katatrace/katatrace/endpoint"
	"github.com/katatrace/katatrace/guestrelay"
	"github.com/katatrace/katatrace/internal/testutil"
	"github.com/katatrace/katatrace/sink"
	"github.com/katatrace/katatrace/wire"
)

// relayRig is a guest relay and a host relay in this process, joined by a
// unix socket, between a UDP sender and a counting UDP sink.
type relayRig struct {
	send     net.Conn
	received atomic.Int64
	stop     func()
}

func newRelayRig(tb testing.TB) *relayRig {
	path := filepath.Join(testutil.SockDir(tb), "h")
	quiet := slog.New(slog.DiscardHandler)
	sinkConn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		tb.Fatal(err)
	}
	testutil.ForceReadBuffer(sinkConn, 64<<20)
	r := &relayRig{}
	go func() {
		buf := make([]byte, 65536)
		for {
			if _, err := sinkConn.Read(buf); err != nil {
				return
			}
			r.received.Add(1)
		}
	}()
	ps, err := sink.DialPacketSink(testutil.Must(endpoint.ParseAddr("udp://" + sinkConn.LocalAddr().String())))
	if err != nil {
		tb.Fatal(err)
	}
	ln, err := endpoint.Listen(testutil.Must(endpoint.ParseAddr("unix://" + path)))
	if err != nil {
		tb.Fatal(err)
	}
	srv := NewServer(ServerConfig{Kind: wire.KindJaeger, Sink: ps, Logger: quiet, GuestRate: 1 << 20, GuestBurst: 1 << 20}) // as the roles default
	go srv.Serve(ln, path)
	pc, err := endpoint.ListenPacket(testutil.Must(endpoint.ParseAddr("udp://127.0.0.1:0")))
	if err != nil {
		tb.Fatal(err)
	}
	testutil.ForceReadBuffer(pc.(*net.UDPConn), 64<<20)
	to := testutil.Must(endpoint.ParseAddr("unix://" + path))
	rl := guestrelay.StartRelay(guestrelay.Config{Kind: wire.KindJaeger, QueueBytes: 4 << 20, Logger: quiet,
		Dial: func(ctx context.Context) (net.Conn, error) { return endpoint.Dial(ctx, to) }}, pc, 0)
	r.send, err = net.Dial("udp", pc.LocalAddr().String())
	if err != nil {
		tb.Fatal(err)
	}
	r.stop = func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = rl.Shutdown(ctx) // closes pc
		_ = srv.Shutdown(ctx)
		ps.Close(context.Background())
		sinkConn.Close()
		r.send.Close()
	}
	return r
}

// pump sends n datagrams, keeping at most window in flight, and waits until
// all arrived.
func (r *relayRig) pump(tb testing.TB, p []byte, n int) {
	base := r.received.Load()
	window := int64(min(512, (2<<20)/len(p)))
	deadline := time.Now().Add(30 * time.Second)
	for i := 0; i < n; i++ {
		for int64(i)-(r.received.Load()-base) >= window {
			if time.Now().After(deadline) {
				tb.Fatalf("stalled: %d of %d delivered", r.received.Load()-base, i)
			}
			runtime.Gosched()
		}
		if _, err := r.send.Write(p); err != nil {
			tb.Fatal(err)
		}
	}
	for r.received.Load()-base < int64(n) {
		if time.Now().After(deadline) {
			tb.Fatalf("%d of %d delivered", r.received.Load()-base, n)
		}
		time.Sleep(100 * time.Microsecond)
	}
}

// TestRelaySteadyStateAllocatesNothing: once warm, the whole path (UDP
// read, queue, stream write, frame read, UDP write) allocates nothing per
// datagram.
func TestRelaySteadyStateAllocatesNothing(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates on its own: run without -race (make unit does)")
	}
	r := newRelayRig(t)
	defer r.stop()
	for _, size := range []int{100, 1024, 20000} {
		p := bytes.Repeat([]byte{'x'}, size)
		r.pump(t, p, 20000) // warm up: buffers, pools, goroutine stacks
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		const n = 20000
		r.pump(t, p, n)
		runtime.ReadMemStats(&after)
		perDatagram := float64(after.Mallocs-before.Mallocs) / n
		t.Logf("%d bytes: %.4f allocations per datagram", size, perDatagram)
		if perDatagram > 0.01 {
			t.Errorf("%d-byte datagrams: %.3f allocations per datagram, want 0", size, perDatagram)
		}
	}
}

func BenchmarkRelay(b *testing.B) {
	for _, size := range []int{64, 1024, 8192, 60000} {
		b.Run(fmt.Sprint(size), func(b *testing.B) {
			r := newRelayRig(b)
			defer r.stop()
			p := bytes.Repeat([]byte{'x'}, size)
			r.pump(b, p, 1000)
			b.SetBytes(int64(size))
			b.ReportAllocs()
			b.ResetTimer()
			r.pump(b, p, b.N)
		})
	}
}
