package hostrelay

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"maps"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/katatrace/katatrace/endpoint"
	"github.com/katatrace/katatrace/fdstore"
	"github.com/katatrace/katatrace/guestid"
	"github.com/katatrace/katatrace/internal/storetest"
	"github.com/katatrace/katatrace/internal/testutil"
	"github.com/katatrace/katatrace/kataspan"
	"github.com/katatrace/katatrace/wire"
)

// unit is a host relay as a systemd unit would run it: a server with the
// unit's file descriptor store, listening on path, and its successors,
// each taking up what the one before handed over.
type unit struct {
	t    *testing.T
	m    *storetest.Manager
	path string
	cfg  ServerConfig
	srv  *Server
	done chan error
}

func newUnit(t *testing.T, cfg ServerConfig) *unit {
	m := storetest.New(t)
	t.Setenv("NOTIFY_SOCKET", m.Path())
	u := &unit{t: t, m: m, path: filepath.Join(testutil.SockDir(t), "vm_6831"), cfg: cfg}
	u.start(State{})
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = u.srv.Shutdown(ctx)
		if u.done != nil { // nil: a start failed after the last server ended
			<-u.done
		}
	})
	return u
}

// start runs the next server: it adopts what the store holds, with st,
// and listens.
func (u *unit) start(st State) {
	u.t.Helper()
	files := u.m.Files()
	store, err := fdstore.Open(1000, len(files))
	if err != nil {
		u.t.Fatal(err)
	}
	cfg := u.cfg
	cfg.Store, cfg.Logger, cfg.MaxConnsPerGuest = store, testLogger(u.t), 1000
	u.srv = NewServer(cfg)
	states := map[string]*ConnState{}
	for i, c := range st.Conns {
		states[c.Name] = &st.Conns[i]
	}
	var adopted []Adopted
	for _, name := range slices.Sorted(maps.Keys(files)) {
		conn, err := endpoint.FileConn(files[name])
		files[name].Close()
		if err != nil {
			u.t.Fatal(err)
		}
		adopted = append(adopted, Adopted{Conn: conn, Name: name, State: states[name]})
	}
	if n := u.srv.Adopt(adopted, st.Sessions); n != len(adopted) {
		u.t.Fatalf("adopted %d of %d", n, len(adopted))
	}
	ln, err := endpoint.Listen(testutil.Must(endpoint.ParseAddr("unix://" + u.path)))
	if err != nil {
		u.t.Fatal(err)
	}
	u.done = make(chan error, 1)
	go func() { u.done <- u.srv.Serve(ln, "unix://"+u.path) }()
}

// restart hands over to a new server, as a SIGTERM under systemd does.
func (u *unit) restart() {
	u.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := u.srv.Handover(ctx)
	if err != nil {
		u.t.Fatal(err)
	}
	err = <-u.done
	u.done = nil
	if err != nil {
		u.t.Fatal(err)
	}
	u.start(st)
}

// TestHandoverUnderLoad: v2 guest relays, v1 and raw (socat) peers stream
// while the host relay is handed over to a successor three times: every
// datagram arrives once, whole and in order, and no guest ever
// reconnects.
func TestHandoverUnderLoad(t *testing.T) {
	sink := &memSink{}
	u := newUnit(t, ServerConfig{Kind: wire.KindJaeger, Sink: sink,
		RawSplit: func(guestid.ID, func(int)) bufio.SplitFunc { return bufio.ScanLines }})
	const guests, raws, each = 8, 3, 300
	var wg sync.WaitGroup
	relays := make([]*testGuest, guests)
	for i := range guests {
		relays[i] = startGuest(t, u.path, 4<<20)
		send := relays[i].sender(t)
		wg.Go(func() {
			for seq := range each {
				if _, err := send.Write(payload(i, seq, 100+(i*977+seq*131)%6000)); err != nil {
					t.Error(err)
					return
				}
				time.Sleep(time.Millisecond)
			}
		})
	}
	for i := range raws {
		c, err := net.Dial("unix", u.path)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		wg.Go(func() {
			for seq := range each {
				line := fmt.Sprintf("raw %d line %d %s\n", i, seq, strings.Repeat("x", seq%50))
				// Each line in two writes: a handover often falls between.
				for _, part := range []string{line[:len(line)/2], line[len(line)/2:]} {
					if _, err := io.WriteString(c, part); err != nil {
						t.Errorf("raw peer %d: %v", i, err)
						return
					}
					time.Sleep(time.Millisecond)
				}
			}
		})
	}
	// v1 peers written by hand, each frame in two writes: a handover
	// often falls inside a frame.
	const framed = 2
	for i := range framed {
		c, err := net.Dial("unix", u.path)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		if _, err := c.Write(wire.AppendHello(nil, wire.KindJaeger)); err != nil {
			t.Fatal(err)
		}
		wg.Go(func() {
			for seq := range each {
				f := wire.AppendFrame(nil, payload(100+i, seq, 50+seq%400))
				for _, part := range [][]byte{f[:len(f)/2], f[len(f)/2:]} {
					if _, err := c.Write(part); err != nil {
						t.Errorf("framed peer %d: %v", i, err)
						return
					}
					time.Sleep(time.Millisecond)
				}
			}
		})
	}
	for range 3 {
		time.Sleep(150 * time.Millisecond)
		u.restart()
	}
	wg.Wait()
	for _, g := range relays {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		if err := g.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		cancel()
		if n := g.Stats().Connects; n != 1 {
			t.Errorf("a guest relay connected %d times", n)
		}
	}
	testutil.Eventually(t, 10*time.Second, "every raw line and v1 frame", func() bool { return sink.total() == (guests+raws+framed)*each })
	sink.mu.Lock()
	defer sink.mu.Unlock()
	if len(sink.got) != guests+raws+framed {
		t.Fatalf("%d connections reached the sink, want %d: %v", len(sink.got), guests+raws+framed, slices.Collect(maps.Keys(sink.got)))
	}
	for conn, ps := range sink.got {
		if bytes.HasPrefix(ps[0], []byte("raw ")) {
			var peer int
			fmt.Sscanf(string(ps[0]), "raw %d", &peer)
			for seq, p := range ps {
				if want := fmt.Sprintf("raw %d line %d %s", peer, seq, strings.Repeat("x", seq%50)); string(p) != want {
					t.Fatalf("%s: line %d is %q, want %q", conn, seq, p, want)
				}
			}
			continue
		}
		peer := int(binary.BigEndian.Uint32(ps[0]))
		if len(ps) != each {
			t.Fatalf("%s: %d datagrams, want %d", conn, len(ps), each)
		}
		for seq, p := range ps {
			size := 100 + (peer*977+seq*131)%6000
			if peer >= 100 {
				size = 50 + seq%400
			}
			if !bytes.Equal(p, payload(peer, seq, size)) {
				t.Fatalf("%s: datagram %d is not peer %d's datagram %d intact", conn, seq, peer, seq)
			}
		}
	}
}

// spans reads Kata span streams in the test (roles wires the same).
type spans struct{ *kataspan.Reader }

func (r spans) Skipped() Skipped {
	s := r.Reader.Skipped()
	return Skipped{s.Oversize, s.Stalled, s.Resyncs, s.Bytes}
}

// TestHandoverOfAgentsInsideFrames: Kata agents write their frames a few
// bytes at a time while the forwarder is handed over again and again: a
// handover falls inside frames and headers, and every frame arrives once,
// whole.
func TestHandoverOfAgentsInsideFrames(t *testing.T) {
	sink := &memSink{}
	u := newUnit(t, ServerConfig{Kind: wire.KindKataSpans, Sink: sink,
		Messages: func(r io.Reader, mem Memory) MessageReader {
			sr := kataspan.NewReader(r, 1<<20)
			sr.SetMemory(mem)
			return spans{sr}
		}})
	stream, err := os.ReadFile(filepath.Join("..", "kataspan", "testdata", "bincode-otel014-api.bin"))
	if err != nil {
		t.Fatal(err)
	}
	const agents = 4
	var wg sync.WaitGroup
	for range agents {
		c, err := net.Dial("unix", u.path)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		wg.Go(func() {
			for b := stream; len(b) > 0; {
				n := min(len(b), 97)
				if _, err := c.Write(b[:n]); err != nil {
					t.Errorf("an agent's write failed: %v", err)
					return
				}
				b = b[n:]
				time.Sleep(2 * time.Millisecond)
			}
		})
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	restarts := 0
	for wait := true; wait; restarts++ {
		select {
		case <-done:
			wait = false
		case <-time.After(17 * time.Millisecond):
		}
		u.restart()
	}
	var want [][]byte
	for b := stream; len(b) > 0; {
		n := binary.BigEndian.Uint64(b)
		want, b = append(want, b[8:8+n]), b[8+n:]
	}
	testutil.Eventually(t, 10*time.Second, "every frame", func() bool { return sink.total() == agents*len(want) })
	sink.mu.Lock()
	defer sink.mu.Unlock()
	for conn, ps := range sink.got {
		if !slices.EqualFunc(ps, want, bytes.Equal) {
			t.Fatalf("%s: %d frames, not the stream's %d", conn, len(ps), len(want))
		}
	}
	t.Logf("%d handovers", restarts)
}
