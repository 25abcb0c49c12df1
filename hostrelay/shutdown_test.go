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
	"github.com/katatrace/katatrace/internal/testutil"
	"github.com/katatrace/katatrace/wire"
)

// memSink keeps every datagram it is handed, per peer name.
type memSink struct {
	mu  sync.Mutex
	got map[string][][]byte
}

func (s *memSink) Send(p []byte, peer string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.got == nil {
		s.got = map[string][][]byte{}
	}
	s.got[peer] = append(s.got[peer], bytes.Clone(p))
	return nil
}

func (s *memSink) Flush(context.Context) error { return nil }
func (s *memSink) Close(context.Context) error { return nil }

// TestShutdownWhilePeersStream stops a host relay while 20 guests are
// streaming into it, as SIGTERM does: under -race this is where the drain
// deadline was once read without the lock. What the server accepted must
// reach the sink whole and in order, and every guest must have delivered
// something before the stop.
func TestShutdownWhilePeersStream(t *testing.T) {
	for round := range 3 {
		path := filepath.Join(testutil.SockDir(t), "h_6831")
		ln, err := endpoint.Listen(endpoint.MustParseAddr("unix://" + path))
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
