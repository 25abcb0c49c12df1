package guestrelay

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/katatrace/katatrace/endpoint"
	"github.com/katatrace/katatrace/guestid"
	"github.com/katatrace/katatrace/hostrelay"
	"github.com/katatrace/katatrace/internal/testutil"
	"github.com/katatrace/katatrace/sink"
	"github.com/katatrace/katatrace/wire"
)

// countSink counts what a real host relay hands it.
type countSink struct {
	mu sync.Mutex
	n  int
}

func (s *countSink) Send([]byte, guestid.ID) error {
	s.mu.Lock()
	s.n++
	s.mu.Unlock()
	return nil
}
func (s *countSink) Flush(context.Context) error { return nil }
func (s *countSink) Close(context.Context) error { return nil }
func (s *countSink) got() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.n
}

// holdSink is a countSink with an endpoint: held says, for the call-th
// FlushGuest (from 1), how many of the guest's datagrams it holds still.
type holdSink struct {
	countSink
	held  func(ctx context.Context, call int) int
	calls atomic.Int32
}

func (s *holdSink) FlushGuest(ctx context.Context, _ string) (int, uint64, error) {
	return s.held(ctx, int(s.calls.Add(1))), 0, nil
}
func (s *holdSink) Lost(string) uint64 { return 0 }

// startHost serves a real host relay on the unix socket path until the
// test ends (or stop).
func startHost(t *testing.T, path string, s sink.Sink) (stop func()) {
	t.Helper()
	ln, err := endpoint.Listen(testutil.Must(endpoint.ParseAddr("unix://" + path)))
	if err != nil {
		t.Fatal(err)
	}
	srv := hostrelay.NewServer(hostrelay.ServerConfig{Kind: wire.KindJaeger, Sink: s, Logger: testLogger(t), MaxConnsPerGuest: 100})
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln, "unix://"+path) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := srv.Shutdown(ctx); err != nil {
				t.Errorf("host shutdown: %v", err)
			}
			<-done
		})
	}
	t.Cleanup(stop)
	return stop
}

// muteHost accepts on path, reads everything and answers nothing, until
// stop, which closes its connections and takes the socket away; read is
// how many bytes it read.
func muteHost(t *testing.T, path string) (read func() int64, stop func()) {
	t.Helper()
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	var n atomic.Int64
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			go func() {
				buf := make([]byte, 64<<10)
				for {
					k, err := c.Read(buf)
					n.Add(int64(k))
					if err != nil {
						return
					}
				}
			}()
		}
	}()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			_ = ln.Close() // removes the socket file
			mu.Lock()
			defer mu.Unlock()
			for _, c := range conns {
				_ = c.Close()
			}
		})
	}
	t.Cleanup(stop)
	return n.Load, stop
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(string(p[:len(p)-1]))
	return len(p), nil
}

// unixRelay is a guest relay (no socket of its own) to the host at path.
func unixRelay(t *testing.T, path string, framing Framing, queueBytes int) *Relay {
	t.Helper()
	r := StartRelay(Config{
		Kind:       wire.KindJaeger,
		Framing:    framing,
		Dial:       func(ctx context.Context) (net.Conn, error) { return (&net.Dialer{}).DialContext(ctx, "unix", path) },
		Target:     "unix://" + path,
		QueueBytes: queueBytes,
		BackoffMin: 5 * time.Millisecond,
		BackoffMax: 20 * time.Millisecond,
		Logger:     testLogger(t),
	}, nil, 0)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = r.Shutdown(ctx)
	})
	return r
}

func flushWithin(r *Relay, d time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	return r.Flush(ctx)
}

// TestFlushWhoseMarkerWasDropped: a flush whose marker drop-oldest
// pushed out of the queue, after it went out to a host that never answers
// (sent) or before it went anywhere (owed, then sent to such a host), is
// answered once a healthy host takes over, and leaves no debt behind it:
// the flushes after it are answered too (a count of answers had them all
// one short, forever), and truly: nothing is queued or unconfirmed then.
func TestFlushWhoseMarkerWasDropped(t *testing.T) {
	hello := map[Framing]int64{Framed: 24, FramedV1: 8}
	for _, framing := range []Framing{Framed, FramedV1} {
		for _, sent := range []bool{true, false} {
			name := framing.String() + "/owed"
			if sent {
				name = framing.String() + "/sent"
			}
			t.Run(name, func(t *testing.T) {
				path := filepath.Join(testutil.SockDir(t), "h")
				var read func() int64
				var stopMute func()
				if sent {
					read, stopMute = muteHost(t, path)
				}
				r := unixRelay(t, path, framing, wire.MaxFrameSize)
				if sent {
					testutil.Eventually(t, 5*time.Second, "connected", func() bool { return r.Stats().Connected })
				}
				r.Send([]byte("before it")) // what the flush waits for
				first := make(chan error, 1)
				go func() { first <- flushWithin(r, 20*time.Second) }()
				if sent { // the hello and the marker reached the host
					testutil.Eventually(t, 5*time.Second, "the marker sent", func() bool { return read() == hello[framing]+2*wire.FrameHeaderSize+int64(len("before it")) })
				} else {
					time.Sleep(50 * time.Millisecond) // the marker queued, with no host to go to
				}
				// Drop-oldest now pushes the marker out of the queue.
				for range 3 * wire.MaxFrameSize / 1004 {
					r.Send(make([]byte, 1000))
				}
				if r.Stats().Queue.Dropped == 0 {
					t.Fatal("nothing dropped: the queue did not overflow")
				}
				if !sent { // the owed marker goes out to a host that never answers
					var n int64
					read, stopMute = muteHost(t, path)
					testutil.Eventually(t, 5*time.Second, "the host read the queue", func() bool { n = read(); return n > 2*wire.MaxFrameSize/3 })
				}
				select {
				case err := <-first:
					t.Fatalf("the flush returned %v before any host answered", err)
				default:
				}
				stopMute()
				sink := &countSink{}
				startHost(t, path, sink)
				if err := <-first; err != nil {
					t.Fatalf("the flush whose marker was dropped, with a healthy host: %v", err)
				}
				for i := range 2 {
					if err := flushWithin(r, 10*time.Second); err != nil {
						t.Fatalf("flush %d after it: %v", i+1, err)
					}
				}
				s := r.Stats()
				if s.Queue.Queued != 0 || s.Queue.Unacked != 0 {
					t.Fatalf("flushes answered with %d queued, %d unconfirmed", s.Queue.Queued, s.Queue.Unacked)
				}
				// v2: each datagram reached the sink or is counted dropped
				// (v1 loses, uncounted, what the mute host read).
				if got := uint64(sink.got()) + s.Queue.Dropped; framing == Framed && got < s.Queue.Enqueued {
					t.Fatalf("the sink got %d and %d were dropped, of %d queued", sink.got(), s.Queue.Dropped, s.Queue.Enqueued)
				}
			})
		}
	}
}

// TestFlushAfterTheHostWent: a flush while no host is connected, nothing
// queued or unconfirmed, still asks one when datagrams were confirmed
// since the last clean answer: the host that confirmed them may hold
// them yet, or have handed them to its successor. With no host to ask it
// says it could not; a successor that holds them says so; once a host
// answered clean, a flush without a host returns at once (it knows).
func TestFlushAfterTheHostWent(t *testing.T) {
	path := filepath.Join(testutil.SockDir(t), "h")
	stopFirst := startHost(t, path, &countSink{})
	r := unixRelay(t, path, Framed, wire.MaxFrameSize)
	testutil.Eventually(t, 5*time.Second, "connected", func() bool { return r.Stats().Connected })
	const n = 10
	for range n {
		r.Send([]byte("confirmed, and then its host goes"))
	}
	testutil.Eventually(t, 5*time.Second, "confirmed", func() bool { return r.Stats().Queue.Acked == n })
	stopFirst()
	testutil.Eventually(t, 5*time.Second, "disconnected", func() bool { return !r.Stats().Connected })

	if err := flushWithin(r, 200*time.Millisecond); err == nil || !strings.Contains(err.Error(), "could not be asked") {
		t.Fatalf("a flush with no host, datagrams confirmed since the last answer: %v; want that it could not ask", err)
	}
	var held atomic.Int64
	held.Store(n)
	stopNext := startHost(t, path, &holdSink{held: func(context.Context, int) int { return int(held.Load()) }})
	var na *NotAcceptedError
	if err := flushWithin(r, time.Second); !errors.As(err, &na) || na.Datagrams != n {
		t.Fatalf("a flush to a successor that holds the %d datagrams: %v", n, err)
	}
	held.Store(0)
	if err := flushWithin(r, 5*time.Second); err != nil {
		t.Fatalf("a flush once the successor's endpoint took them: %v", err)
	}
	stopNext()
	testutil.Eventually(t, 5*time.Second, "disconnected", func() bool { return !r.Stats().Connected })
	// No host to ask: the flush must know.
	if err := flushWithin(r, 2*time.Second); err != nil {
		t.Fatalf("a flush with no host, nothing confirmed since a clean answer: %v", err)
	}
}

// TestFlushEndedByALaterCleanAnswer: a flush whose host answered "not
// accepted" asks again; a clean answer to a request asked after its
// first (another flush's) tells of its datagrams too, and ends it,
// whatever becomes of a request of its own asked again.
func TestFlushEndedByALaterCleanAnswer(t *testing.T) {
	path := filepath.Join(testutil.SockDir(t), "h")
	firstAsked, release := make(chan struct{}), make(chan struct{})
	startHost(t, path, &holdSink{held: func(ctx context.Context, call int) int {
		switch call {
		case 1: // the first flush's: not accepted, once the second asked
			close(firstAsked)
			select {
			case <-release:
			case <-ctx.Done():
			}
			return 1
		case 2: // the second's: clean, after the first took its answer in
			time.Sleep(50 * time.Millisecond)
			return 0
		}
		<-ctx.Done() // any asked again: not within the host's flush timeout
		return 1
	}})
	r := unixRelay(t, path, Framed, wire.MaxFrameSize)
	testutil.Eventually(t, 5*time.Second, "connected", func() bool { return r.Stats().Connected })
	r.Send([]byte("before both"))
	first := make(chan error, 1)
	go func() { first <- flushWithin(r, 1500*time.Millisecond) }()
	select {
	case <-firstAsked:
	case <-time.After(5 * time.Second):
		t.Fatal("the host was not asked")
	}
	second := make(chan error, 1)
	go func() { second <- flushWithin(r, 5*time.Second) }()
	testutil.Eventually(t, 5*time.Second, "the second flush asked", func() bool { return r.f.q.LastFlush() == 2 })
	close(release)
	if err := <-second; err != nil {
		t.Fatalf("the second flush: %v", err)
	}
	if err := <-first; err != nil {
		t.Fatalf("the first flush, after a clean answer to a later request: %v", err)
	}
}

// heldConn is a connection whose writes wait until release is closed: a
// host that does not take what it is sent.
type heldConn struct {
	net.Conn
	release <-chan struct{}
}

func (c heldConn) Write(b []byte) (int, error) {
	<-c.release
	return c.Conn.Write(b)
}

// TestRawFlushAnsweredOnceWritten: with raw framing nobody answers a
// flush, so the relay answers it itself, but only once the payload queued
// before it is written: not while that write still waits.
func TestRawFlushAnsweredOnceWritten(t *testing.T) {
	path := filepath.Join(testutil.SockDir(t), "h")
	read, _ := muteHost(t, path)
	release := make(chan struct{})
	r := StartRelay(Config{Kind: wire.KindJaeger, Framing: Raw, Target: "unix://" + path, Logger: testLogger(t),
		Dial: func(ctx context.Context) (net.Conn, error) {
			c, err := (&net.Dialer{}).DialContext(ctx, "unix", path)
			if err != nil {
				return nil, err
			}
			return heldConn{c, release}, nil
		}}, nil, 0)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = r.Shutdown(ctx)
	})
	r.Send([]byte("payload"))
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	err := r.Flush(ctx)
	cancel()
	if err == nil {
		t.Fatalf("a raw flush was answered while the payload before it was still unwritten (%d bytes read by the host)", read())
	}
	close(release)
	ctx, cancel = context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := r.Flush(ctx); err != nil {
		t.Fatalf("once written: %v", err)
	}
	testutil.Eventually(t, 5*time.Second, "the payload at the host", func() bool { return read() == int64(len("payload")) })
}
