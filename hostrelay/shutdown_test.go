package hostrelay

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"net"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/katatrace/katatrace/endpoint"
	"github.com/katatrace/katatrace/guestid"
	"github.com/katatrace/katatrace/internal/testutil"
	"github.com/katatrace/katatrace/wire"
)

// memSink keeps every datagram it is handed, per peer name.
type memSink struct {
	mu  sync.Mutex
	got map[string][][]byte
}

func (s *memSink) Send(p []byte, from guestid.ID) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.got == nil {
		s.got = map[string][][]byte{}
	}
	s.got[from.Conn] = append(s.got[from.Conn], bytes.Clone(p))
	return nil
}

// total is how many datagrams the sink got, from every peer.
func (s *memSink) total() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, ps := range s.got {
		n += len(ps)
	}
	return n
}

func (s *memSink) Flush(context.Context) error { return nil }
func (s *memSink) Close(context.Context) error { return nil }

// blockingSink holds every Send and Flush until release is closed: a sink
// that is stuck (a pipe nobody reads, a wedged collector).
type blockingSink struct {
	release chan struct{}
	entered chan struct{} // one value per call that blocked
}

func newBlockingSink() *blockingSink {
	return &blockingSink{release: make(chan struct{}), entered: make(chan struct{}, 100)}
}

func (s *blockingSink) wait() {
	s.entered <- struct{}{}
	<-s.release
}

func (s *blockingSink) Send([]byte, guestid.ID) error { s.wait(); return nil }

func (s *blockingSink) Flush(ctx context.Context) error {
	s.entered <- struct{}{}
	select {
	case <-s.release:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (s *blockingSink) Close(context.Context) error { return nil }

// TestShutdownBoundedBySinkStuck: Shutdown returns when its context ends
// even while connections are stuck in the sink, whether in a Send or in a
// guest's flush request (whose own timeout is longer than the drain).
func TestShutdownBoundedBySinkStuck(t *testing.T) {
	for _, stuck := range []string{"send", "flush"} {
		t.Run(stuck, func(t *testing.T) {
			sink := newBlockingSink()
			defer close(sink.release)
			path := filepath.Join(testutil.SockDir(t), "h_6831")
			ln, err := endpoint.Listen(testutil.Must(endpoint.ParseAddr("unix://" + path)))
			if err != nil {
				t.Fatal(err)
			}
			srv := NewServer(ServerConfig{Kind: wire.KindJaeger, Sink: sink, Logger: testLogger(t), FlushTimeout: time.Hour})
			served := make(chan error, 1)
			go func() { served <- srv.Serve(ln, "unix://"+path) }()
			msg := wire.AppendHello(nil, wire.KindJaeger)
			if stuck == "send" {
				msg = wire.AppendFrame(msg, []byte("a datagram"))
			} else {
				msg = wire.AppendFrame(msg, nil) // a flush request
			}
			dialHost(t, path, msg)
			select {
			case <-sink.entered:
			case <-time.After(10 * time.Second):
				t.Fatal("the datagram never reached the sink")
			}
			ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
			defer cancel()
			returned := make(chan error, 1)
			go func() { returned <- srv.Shutdown(ctx) }()
			select {
			case err := <-returned:
				if !errors.Is(err, context.DeadlineExceeded) {
					t.Fatalf("Shutdown = %v, want the context's error", err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("Shutdown still waiting 10 s after its 200 ms context ended")
			}
			if err := <-served; err != nil {
				t.Fatalf("Serve: %v", err)
			}
		})
	}
}

// TestDrainDeadlineNotReplaced: a connection setting its read deadline
// just as Shutdown begins must not replace the drain's deadline with its
// own (here: none), which would keep a quiet guest until the drain ends.
func TestDrainDeadlineNotReplaced(t *testing.T) {
	path := filepath.Join(testutil.SockDir(t), "h_6831")
	ln, err := endpoint.Listen(testutil.Must(endpoint.ParseAddr("unix://" + path)))
	if err != nil {
		t.Fatal(err)
	}
	srv := NewServer(ServerConfig{Kind: wire.KindJaeger, Sink: &memSink{}, Logger: testLogger(t)})
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln, "unix://"+path) }()
	shut := make(chan error, 1)
	var once sync.Once
	hook := func() {
		once.Do(func() {
			go func() {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				shut <- srv.Shutdown(ctx)
			}()
			// Let Shutdown set the drain's deadlines now, between this
			// connection's check and its own deadline.
			time.Sleep(100 * time.Millisecond)
		})
	}
	testHookSetDeadline.Store(&hook)
	t.Cleanup(func() { testHookSetDeadline.Store(nil) })
	// The hello's deadline is the first one set, then cleared once the
	// hello is in: a quiet guest after it.
	c := dialHost(t, path, wire.AppendHello(nil, wire.KindJaeger))
	defer c.Close()
	if err := <-shut; err != nil {
		t.Fatalf("a quiet guest kept the drain to its end: %v", err)
	}
	if err := <-served; err != nil {
		t.Fatalf("Serve: %v", err)
	}
}

// TestShutdownWhilePeersStream stops a host relay while 20 guests are
// streaming into it, as SIGTERM does: under -race this is where the drain
// deadline was once read without the lock. What the server accepted must
// reach the sink whole and in order, and every guest must have delivered
// something before the stop.
func TestShutdownWhilePeersStream(t *testing.T) {
	for round := range 3 {
		path := filepath.Join(testutil.SockDir(t), "h_6831")
		ln, err := endpoint.Listen(testutil.Must(endpoint.ParseAddr("unix://" + path)))
		if err != nil {
			t.Fatal(err)
		}
		sink := &memSink{}
		// Every peer is this process: one guest to the limits, so lift them.
		srv := NewServer(ServerConfig{Kind: wire.KindJaeger, Sink: sink, Logger: testLogger(t), MaxConnsPerGuest: 1000})
		served := make(chan error, 1)
		go func() { served <- srv.Serve(ln, "unix://"+path) }()

		const peers, size = 20, 300
		var wg sync.WaitGroup
		sent := make([]int, peers)
		started := make(chan struct{}, peers)
		for peer := range peers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c, err := net.Dial("unix", path)
				if err != nil {
					t.Errorf("peer %d: %v", peer, err)
					return
				}
				defer c.Close()
				buf := wire.AppendHello(nil, wire.KindJaeger)
				for seq := 0; ; seq++ {
					buf = wire.AppendFrame(buf, payload(peer, seq, size))
					if _, err := c.Write(buf); err != nil {
						return // the server hung up: the stop
					}
					buf = buf[:0]
					sent[peer] = seq + 1
					if seq == 50 {
						started <- struct{}{}
					}
				}
			}()
		}
		for range peers {
			<-started
		}
		// Stop only once the server has taken every peer and handed on
		// something of each: a connection still in the listen backlog is
		// the kernel's, not the relay's.
		testutil.Eventually(t, 10*time.Second, "every peer delivering", func() bool {
			sink.mu.Lock()
			defer sink.mu.Unlock()
			return len(sink.got) == peers
		})
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err = srv.Shutdown(ctx)
		cancel()
		// Peers that never pause keep the drain going until its end: a cut
		// drain is expected here, any other error is not.
		if err != nil && !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("round %d: shutdown: %v", round, err)
		}
		if err := <-served; err != nil {
			t.Errorf("round %d: serve: %v", round, err)
		}
		wg.Wait()
		// A cut drain returns at once; the connections it closed end soon
		// after, handing on what they had read.
		testutil.Eventually(t, 10*time.Second, "every connection ended", func() bool { return srv.Stats().Active == 0 })

		sink.mu.Lock()
		var total uint64
		for name, got := range sink.got {
			peer := int(binary.BigEndian.Uint32(got[0]))
			for seq, p := range got {
				if !bytes.Equal(p, payload(peer, seq, size)) {
					t.Fatalf("round %d, %s: datagram %d is not peer %d's datagram %d intact", round, name, seq, peer, seq)
				}
			}
			if len(got) < 50 || len(got) > sent[peer] {
				t.Errorf("round %d: peer %d: sink got %d, the peer wrote %d (at least 50 before the stop)", round, peer, len(got), sent[peer])
			}
			total += uint64(len(got))
		}
		sink.mu.Unlock()
		if len(sink.got) != peers {
			t.Errorf("round %d: %d peers reached the sink, want %d", round, len(sink.got), peers)
		}
		if n := srv.Stats().Datagrams; n != total {
			t.Errorf("round %d: server counted %d datagrams, sink got %d", round, n, total)
		}
	}
}
