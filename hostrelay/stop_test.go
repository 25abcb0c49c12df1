package hostrelay

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/katatrace/katatrace/endpoint"
	"github.com/katatrace/katatrace/internal/jaegertest"
	"github.com/katatrace/katatrace/internal/testutil"
	"github.com/katatrace/katatrace/sink"
	"github.com/katatrace/katatrace/wire"
)

// runHost runs a Host on the unix socket path with sink out until the
// returned stop is called; stop returns Run's error.
func runHost(t *testing.T, path string, out sink.Sink, drain time.Duration) (h *Host, stop func() error) {
	t.Helper()
	from := testutil.Must(endpoint.ParseAddr("unix://" + path))
	h = NewHost(HostConfig{
		Server: ServerConfig{Kind: wire.KindJaeger, Sink: out, MaxConnsPerGuest: 1000},
		From:   []endpoint.Addr{from}, To: "test", DrainTimeout: drain, Logger: testLogger(t),
	})
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- h.Run(ctx) }()
	testutil.Eventually(t, 10*time.Second, "the host listening", func() bool { return h.Listening()[from.String()] == 1 })
	var once sync.Once
	var err error
	stop = func() error {
		once.Do(func() { cancel(); err = <-ran })
		return err
	}
	t.Cleanup(func() { _ = stop() })
	return h, stop
}

// TestStopDeliversWhatItConfirmed: a host relay posting to a collector
// 50 ms away is stopped, with a 1 s bound, while a v2 guest streams into
// it without a pause. The stop returns within its bound, and every span
// the host confirmed to the guest reached the collector: the drain read
// what was waiting, not what kept coming, and left the sink its share of
// the time. (Before: the stream held the drain to the bound's end, the
// sink's close got an expired context and dropped what was in flight.)
func TestStopDeliversWhatItConfirmed(t *testing.T) {
	for round := range 3 {
		col := jaegertest.NewCollector(t, 50*time.Millisecond)
		dgs := jaegertest.OneSpanEach(t, "stream", 3000)
		path := filepath.Join(testutil.SockDir(t), "h_6831")
		cs := sink.NewCollectorSink(col.URL, 16<<20, 8, 0, testLogger(t))
		_, stop := runHost(t, path, cs, time.Second)
		g := startGuest(t, path, 4<<20)

		// 100 datagrams/s, each a request 50 ms long: within what 8
		// workers take, and never quiet as long as the drain's 50 ms.
		quit := make(chan struct{})
		sent := make(chan int, 1)
		go func() {
			i := 0
			defer func() { sent <- i }()
			tick := time.NewTicker(10 * time.Millisecond)
			defer tick.Stop()
			for ; i < len(dgs); i++ {
				select {
				case <-quit:
					return
				case <-tick.C:
				}
				g.Send(dgs[i])
			}
		}()
		testutil.Eventually(t, 20*time.Second, "spans reaching the collector", func() bool { n, _ := col.Spans(); return n >= 30 })
		began := time.Now()
		if err := stop(); err != nil {
			t.Fatalf("round %d: Run: %v", round, err)
		}
		took := time.Since(began)
		confirmed := g.Stats().Queue.Acked
		close(quit)
		n := <-sent
		accepted, twice := col.Spans()
		lost := cs.Stats().Dropped
		t.Logf("round %d: sent %d, confirmed %d, collector accepted %d (%d twice), sink dropped %d; the stop took %v",
			round, n, confirmed, accepted, twice, lost, took.Round(time.Millisecond))
		if took > 2*time.Second {
			t.Errorf("round %d: the stop took %v, bound 1 s", round, took)
		}
		if uint64(accepted) < confirmed || lost > 0 || twice > 0 {
			t.Errorf("round %d: %d spans confirmed to the guest, %d reached the collector (%d twice), %d dropped by the sink: want every confirmed one delivered once",
				round, confirmed, accepted, twice, lost)
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_ = g.Shutdown(ctx)
		cancel()
	}
}

// logTo is a logger writing to the test's log and to buf.
func logTo(t *testing.T, buf *testutil.SyncBuffer) *slog.Logger {
	return slog.New(slog.NewTextHandler(io.MultiWriter(newTWriter(t), buf), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// TestStopSaysWhatItCouldNotDeliver: a host relay whose collector takes
// 10 s per request is stopped, with a 1 s bound, while a v2 guest
// streams. The stop still returns within its bound, and whatever it
// confirmed to the guest either reached the collector or is counted lost
// for that guest (what Holder.Lost gives the metrics) and logged naming
// it.
func TestStopSaysWhatItCouldNotDeliver(t *testing.T) {
	col := jaegertest.NewCollector(t, 10*time.Second)
	dgs := jaegertest.OneSpanEach(t, "stream", 200)
	path := filepath.Join(testutil.SockDir(t), "h_6831")
	var logs testutil.SyncBuffer
	cs := sink.NewCollectorSink(col.URL, 16<<20, 2, 0, logTo(t, &logs))
	h, stop := runHost(t, path, cs, time.Second)
	g := startGuest(t, path, 4<<20)
	for _, p := range dgs[:100] {
		g.Send(p)
	}
	testutil.Eventually(t, 10*time.Second, "the guest's datagrams confirmed", func() bool { return g.Stats().Queue.Acked == 100 })
	go func() {
		for _, p := range dgs[100:] {
			g.Send(p)
			time.Sleep(5 * time.Millisecond)
		}
	}()
	guests := h.Server().Guests()
	if len(guests) != 1 {
		t.Fatalf("%d guests, want 1", len(guests))
	}
	name := guests[0].Guest
	began := time.Now()
	if err := stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if took := time.Since(began); took > 2*time.Second {
		t.Errorf("the stop took %v, bound 1 s", took)
	}
	confirmed := g.Stats().Queue.Acked
	accepted, _ := col.Spans()
	lost := cs.Lost(name)
	t.Logf("confirmed %d, accepted %d, lost %d", confirmed, accepted, lost)
	if confirmed < 100 || uint64(accepted)+lost < confirmed {
		t.Errorf("%d confirmed to the guest, %d accepted by the collector, %d counted lost for %s: some went without a count", confirmed, accepted, lost, name)
	}
	want := fmt.Sprintf(`msg="batches of this guest's lost: the endpoint had not accepted them when the sink closed" url=%s guest=%q batches=%d`, col.URL, name, lost)
	if !strings.Contains(logs.String(), want) {
		t.Errorf("the log does not say what was lost for the guest (want %q)", want)
	}
}

// TestShutdownLeavesNothingRunning: Shutdown called again and again while
// a connection is stuck in the sink returns each time at its context's
// end and leaves no goroutine behind (each call used to leave one waiting
// for the connections); once the sink lets go, nothing of the server is
// left.
func TestShutdownLeavesNothingRunning(t *testing.T) {
	stuck := newBlockingSink()
	path := filepath.Join(testutil.SockDir(t), "h_6831")
	ln, err := endpoint.Listen(testutil.Must(endpoint.ParseAddr("unix://" + path)))
	if err != nil {
		t.Fatal(err)
	}
	srv := NewServer(ServerConfig{Kind: wire.KindJaeger, Sink: stuck, Logger: testLogger(t)})
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln, "unix://"+path) }()
	dialHost(t, path, wire.AppendFrame(wire.AppendHello(nil, wire.KindJaeger), []byte("a datagram")))
	<-stuck.entered
	for range 20 {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
		if err := srv.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Shutdown with a connection stuck in the sink = %v, want the context's error", err)
		}
		cancel()
	}
	if n := goroutinesIn("hostrelay.(*Server)."); n > 1 {
		t.Errorf("%d goroutines of the server's after 20 Shutdowns: want the stuck connection's alone\n%s", n, stacks())
	}
	close(stuck.release)
	if err := <-served; err != nil {
		t.Fatalf("Serve: %v", err)
	}
	if err := srv.Shutdown(context.Background()); err != nil {
		t.Fatalf("Shutdown once the sink let go: %v", err)
	}
	testutil.Eventually(t, 10*time.Second, "nothing of the server running", func() bool { return goroutinesIn("hostrelay.") == 0 })
}

// goroutinesIn counts the goroutines whose stack has a function whose
// name contains fn (the test's own excepted).
func goroutinesIn(fn string) int {
	n := 0
	for _, g := range strings.Split(stacks(), "\n\n") {
		if strings.Contains(g, fn) && !strings.Contains(g, "hostrelay.TestShutdownLeavesNothingRunning") {
			n++
		}
	}
	return n
}

func stacks() string {
	buf := make([]byte, 1<<20)
	return string(buf[:runtime.Stack(buf, true)])
}

// fakeSuccessor records what a Host hands it.
type fakeSuccessor struct {
	events []string
	held   []sink.HeldBatch
}

func (f *fakeSuccessor) HandingOver() { f.events = append(f.events, "handing over") }
func (f *fakeSuccessor) Keep(_ State, held []sink.HeldBatch) error {
	f.events = append(f.events, "keep")
	f.held = held
	return nil
}

// TestHostDrivesItsSeams: a Host listens through the Listen it is given,
// says ready, stopping and its status through its callbacks, and at its
// stop hands a Successor what its sink held (a collector that is down),
// within its bound, and then closes the sink.
func TestHostDrivesItsSeams(t *testing.T) {
	down := downSink{}
	path := filepath.Join(testutil.SockDir(t), "h_6831")
	from := testutil.Must(endpoint.ParseAddr("unix://" + path))
	var mu sync.Mutex
	var events []string
	note := func(e string) { mu.Lock(); events = append(events, e); mu.Unlock() }
	cs := sink.NewCollectorSink(down.url(t), 1<<20, 1, 0, testLogger(t))
	succ := &fakeSuccessor{}
	h := NewHost(HostConfig{
		Server: ServerConfig{Kind: wire.KindJaeger, Sink: cs},
		From:   []endpoint.Addr{from}, To: "test", DrainTimeout: time.Second, Logger: testLogger(t),
		Listen: func(a endpoint.Addr) (net.Listener, error) {
			note("listen " + a.String())
			return endpoint.Listen(a)
		},
		Successor: func() Successor { return succ },
		Ready:     func() { note("ready") },
		Stopping:  func() { note("stopping") },
		Status:    func(s string) { note("status " + s) },
	})
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- h.Run(ctx) }()
	testutil.Eventually(t, 10*time.Second, "the host listening", func() bool { return h.Listening()[from.String()] == 1 })
	dgs := jaegertest.OneSpanEach(t, "seams", 3)
	b := wire.AppendHelloV2(nil, wire.KindJaeger, 9, 1)
	for _, p := range dgs {
		b = wire.AppendFrame(b, p)
	}
	dialHost(t, path, b)
	testutil.Eventually(t, 10*time.Second, "the sink holding the batches", func() bool {
		st := cs.Stats() // the three batches taken (queued, or joined in a request)
		return st.Spans == 3 && st.Queued+st.InFlight > 0 && !st.Up
	})
	began := time.Now()
	cancel()
	if err := <-ran; err != nil {
		t.Fatalf("Run: %v", err)
	}
	if took := time.Since(began); took > 2*time.Second {
		t.Errorf("the stop took %v, bound 1 s", took)
	}
	mu.Lock()
	defer mu.Unlock()
	want := []string{"listen " + from.String(), "ready", "status listening on 1 sockets", "stopping"}
	if !slices.Equal(events, want) {
		t.Errorf("events %q, want %q", events, want)
	}
	if !slices.Equal(succ.events, []string{"handing over", "keep"}) || len(succ.held) != 3 {
		t.Errorf("the successor saw %q and got %d held batches; want handing over, keep, and 3", succ.events, len(succ.held))
	}
}

// downSink is an endpoint that is down: 503 to everything.
type downSink struct{}

func (downSink) url(t *testing.T) string {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		http.Error(w, "down", http.StatusServiceUnavailable)
	}))
	t.Cleanup(srv.Close)
	return srv.URL + "/api/traces"
}

// TestHostStoppedBeforeRunHandsOnWhatItAdopts: a host that fails to start
// (its metrics listener, say) stops before Run: what its predecessor left
// is still taken up, once, and handed on, not an empty state over it.
func TestHostStoppedBeforeRunHandsOnWhatItAdopts(t *testing.T) {
	adopted := 0
	succ := &fakeSuccessor{}
	h := NewHost(HostConfig{Server: ServerConfig{Kind: wire.KindJaeger, Sink: &memSink{}}, To: "test",
		DrainTimeout: time.Second, Logger: testLogger(t), Successor: func() Successor { return succ },
		Adopt: func(*Server) { adopted++ }})
	h.Stop()
	h.Stop()
	if adopted != 1 || !slices.Equal(succ.events, []string{"handing over", "keep"}) {
		t.Fatalf("adopted %d times; the successor saw %q", adopted, succ.events)
	}
}
