package guestrelay

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/katatrace/katatrace/internal/testutil"
	"github.com/katatrace/katatrace/wire"
)

// TestHostThatHangsUpIsRetriedWithBackoff: a host that closes every
// connection at once, saying nothing (a port of another kind), is retried
// as an unreachable one is, with backoff, and said once: the relay does
// not spin reconnecting.
func TestHostThatHangsUpIsRetriedWithBackoff(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var accepted atomic.Int64
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			c.Close()
		}
	}()
	var logs testutil.SyncBuffer
	r := StartRelay(Config{
		Kind: wire.KindText,
		Dial: func(ctx context.Context) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "tcp", ln.Addr().String())
		},
		Target:     "tcp://" + ln.Addr().String(),
		QueueBytes: 1 << 20,
		BackoffMin: 20 * time.Millisecond,
		BackoffMax: 200 * time.Millisecond,
		Logger:     slog.New(slog.NewTextHandler(&logs, nil)),
	}, nil, 0)
	time.Sleep(time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_ = r.Shutdown(ctx)
	// Without backoff, thousands; with it, about 1 s / (20..200 ms).
	if n := accepted.Load(); n < 2 || n > 40 {
		t.Fatalf("%d connections in 1 s to a host that hangs up at once", n)
	}
	if n := strings.Count(logs.String(), "the host closed the connection at once; retrying"); n != 1 {
		t.Fatalf("said %d times, want once at warning level:\n%s", n, logs.String())
	}
}

// TestStopWhileTheClientSends: a stop bounded by 1 s, while the relay's
// client keeps sending 1,000 datagrams a second to it, reads what was
// waiting when it began, not what keeps coming, and leaves the flush its
// time: reading ends well before its half of the stop's time does (a
// socket that cannot say when a datagram came in, once a read finds it
// empty: the client never pauses long enough for a quiet), the host
// confirms everything read, and the stop returns within its bound (and a
// second).
func TestStopWhileTheClientSends(t *testing.T) {
	for _, network := range []string{"udp", "unixgram", "udp-unstamped"} {
		t.Run(network, func(t *testing.T) {
			dir := testutil.SockDir(t)
			path := filepath.Join(dir, "h")
			sink := &countSink{}
			startHost(t, path, sink)
			var pc net.PacketConn
			var err error
			if network == "unixgram" {
				pc, err = net.ListenPacket("unixgram", filepath.Join(dir, "in"))
			} else {
				pc, err = net.ListenPacket("udp", "127.0.0.1:0")
			}
			if err != nil {
				t.Fatal(err)
			}
			addr := pc.LocalAddr()
			if network == "udp-unstamped" {
				pc = struct{ net.PacketConn }{pc} // no SyscallConn: no recvmmsg, no timestamps
				network = "udp"
			}
			const drain = time.Second
			r := socketRelay(t, path, pc, drain) // as the roles start it
			c, err := net.Dial(network, addr.String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			stopClient := testutil.SteadyClient(t, network, addr.String())
			time.Sleep(300 * time.Millisecond)
			began := time.Now()
			readFor := make(chan time.Duration, 1)
			go func() { <-r.ReadDone(); readFor <- time.Since(began) }()
			ctx, cancel := context.WithTimeout(context.Background(), drain)
			defer cancel()
			err = r.Shutdown(ctx)
			took := time.Since(began)
			if reading := <-readFor; reading >= drain/2 {
				t.Errorf("reading took %v, all of its half of the stop's %v: what kept coming was read too", reading, drain)
			}
			stopClient()
			s := r.Stats()
			t.Logf("stopped in %v: %+v", took, s)
			if err != nil {
				t.Fatalf("stop: %v", err)
			}
			if took > drain+time.Second {
				t.Fatalf("the stop took %v, bound %v", took, drain)
			}
			if s.Queue.Queued != 0 || s.Queue.Unacked != 0 || s.Queue.Acked != s.Queue.Enqueued || uint64(sink.got()) < s.Queue.Enqueued {
				t.Fatalf("after the stop: %d read, %d confirmed, %d at the sink", s.Queue.Enqueued, s.Queue.Acked, sink.got())
			}
		})
	}
}

// socketRelay is a guest relay reading pc, as the roles start one, to the
// host at path, once connected; the test stops it.
func socketRelay(t *testing.T, path string, pc net.PacketConn, drain time.Duration) *Relay {
	t.Helper()
	r := StartRelay(Config{
		Kind:       wire.KindJaeger,
		Dial:       func(ctx context.Context) (net.Conn, error) { return (&net.Dialer{}).DialContext(ctx, "unix", path) },
		Target:     "unix://" + path,
		QueueBytes: 4 << 20,
		Logger:     testLogger(t),
	}, pc, drain)
	testutil.Eventually(t, 5*time.Second, "connected", func() bool { return r.Stats().Connected })
	return r
}

// TestStopObeysItsContext: a stop whose host never answers, from a socket
// that cannot say when a datagram came in and whose client keeps sending,
// returns when its context ends (its deadline, or cancelled without one),
// saying the flush was not answered, even if StartRelay's drain allowed
// more.
func TestStopObeysItsContext(t *testing.T) {
	const bound = 400 * time.Millisecond
	for _, deadline := range []bool{true, false} {
		t.Run(fmt.Sprintf("deadline=%v", deadline), func(t *testing.T) {
			path := filepath.Join(testutil.SockDir(t), "h")
			muteHost(t, path)
			udp, err := net.ListenPacket("udp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			r := socketRelay(t, path, struct{ net.PacketConn }{udp}, 10*time.Second) // a drain longer than the stop: ctx bounds it
			testutil.SteadyClient(t, "udp", udp.LocalAddr().String())
			time.Sleep(100 * time.Millisecond)
			ctx, cancel := context.WithTimeout(context.Background(), bound)
			if !deadline {
				ctx, cancel = context.WithCancel(context.Background())
				time.AfterFunc(bound, cancel)
			}
			defer cancel()
			began := time.Now()
			err = r.Shutdown(ctx)
			if took := time.Since(began); took > bound+time.Second {
				t.Fatalf("the stop took %v, bound %v", took, bound)
			}
			if err == nil || !strings.Contains(err.Error(), "not answered") {
				t.Fatalf("stop = %v, want the flush not answered", err)
			}
		})
	}
}
