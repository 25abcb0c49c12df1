package sink

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"weak"

	"github.com/katatrace/katatrace/guestid"
	"github.com/katatrace/katatrace/internal/jaegertest"
	"github.com/katatrace/katatrace/internal/otlptest"
	"github.com/katatrace/katatrace/internal/testutil"
	"github.com/katatrace/katatrace/jaegerthrift"
	"github.com/opentracing/opentracing-go"
)

// TestCollectorRetriesAndDrops: a collector that fails for a while gets
// every batch once it recovers; one that refuses a batch (4xx) has it
// dropped and counted, not retried forever.
func TestCollectorRetriesAndDrops(t *testing.T) {
	dgs := jaegertest.Capture(t, "svc", func(tr opentracing.Tracer) { jaegertest.SmallTrace(tr); jaegertest.BigTrace(tr) })
	var mu sync.Mutex
	failures, got := 3, 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		defer mu.Unlock()
		switch {
		case r.Header.Get("Content-Type") != "application/x-thrift" || len(body) == 0:
			w.WriteHeader(http.StatusBadRequest)
		case failures > 0:
			failures--
			w.WriteHeader(http.StatusServiceUnavailable)
		default:
			got++
			w.WriteHeader(http.StatusAccepted)
		}
	}))
	defer srv.Close()
	c := queuedCollector(t, srv.URL, dgs)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Close(ctx); err != nil {
		t.Fatal(err)
	}
	s := c.Stats()
	if got != len(dgs) || s.Posted != uint64(len(dgs)) || s.Retries < 3 || s.Dropped != 0 {
		t.Fatalf("collector got %d of %d batches; stats %+v", got, len(dgs), s)
	}
	if err := c.Send([]byte("not thrift"), guestid.Named("peer")); err == nil {
		t.Fatal("garbage accepted")
	}
}

func TestCollectorQueueDropsOldest(t *testing.T) {
	block := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-block
		w.WriteHeader(http.StatusAccepted)
	}))
	dgs := jaegertest.Capture(t, "svc", func(tr opentracing.Tracer) { jaegertest.BigTrace(tr) })
	c := NewCollectorSink(srv.URL, 40000, 1, slog.New(slog.DiscardHandler))
	defer func() {
		close(block)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c.Close(ctx)
		srv.Close()
	}()
	for range 5 {
		for _, p := range dgs {
			c.Send(p, guestid.Named("peer"))
		}
	}
	if s := c.Stats(); s.Dropped == 0 {
		t.Fatalf("a 40 kB queue took %d batches without dropping: %+v", 5*len(dgs), s)
	}
}

// TestCollectorQueueFreesWhatItDrops: a batch dropped from a full queue
// is freed at once, so the queue holds no more than its bytes (plus what
// is in flight). Each dropped body is watched by a weak pointer: after a
// collection, none may be left.
func TestCollectorQueueFreesWhatItDrops(t *testing.T) {
	block := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		<-block
		w.WriteHeader(http.StatusAccepted)
	}))
	const size, keep = 4 << 10, 4
	c := NewCollectorSink(srv.URL, keep*size, 1, slog.New(slog.DiscardHandler))
	defer func() {
		close(block)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c.Close(ctx)
		srv.Close()
	}()
	// Bodies made and handed over in a function of their own: the test
	// keeps no reference but the weak one.
	send := func() weak.Pointer[byte] {
		body := make([]byte, size)
		if err := c.enqueue(body, 1, "g"); err != nil {
			t.Fatal(err)
		}
		return weak.Make(&body[0])
	}
	send() // the worker takes it and waits on the collector
	for deadline := time.Now().Add(10 * time.Second); c.Stats().InFlight != 1; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the first batch never went out: %+v", c.Stats())
		}
	}
	var sent []weak.Pointer[byte]
	for i := range 40 {
		sent = append(sent, send())
		runtime.GC()
		dropped := max(len(sent)-keep, 0)
		if st := c.Stats(); st.Dropped != uint64(dropped) || st.Queued != min(len(sent), keep) {
			t.Fatalf("after %d batches: %+v", i+1, st)
		}
		for j, w := range sent[:dropped] {
			if w.Value() != nil {
				t.Fatalf("after %d batches, dropped batch %d (of %d dropped) is still held", i+1, j+1, dropped)
			}
		}
		for j, w := range sent[dropped:] {
			if w.Value() == nil {
				t.Fatalf("queued batch %d was freed", dropped+j+1)
			}
		}
	}
}

// TestCollectorCloseKeepsItsDeadline: against a collector that takes
// requests and never answers, Close returns when its context ends, and
// every batch is counted as dropped: none is lost without a count.
func TestCollectorCloseKeepsItsDeadline(t *testing.T) {
	dgs := jaegertest.Capture(t, "svc", func(tr opentracing.Tracer) { jaegertest.SmallTrace(tr); jaegertest.BigTrace(tr) })
	hang := make(chan struct{})
	var mu sync.Mutex
	requests := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		requests++
		mu.Unlock()
		select {
		case <-hang:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(hang)
	c := queuedCollector(t, srv.URL, dgs)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	closed := make(chan error, 1)
	go func() { closed <- c.Close(ctx) }()
	select {
	case err := <-closed:
		if err == nil {
			t.Fatal("Close reported every batch accepted by a collector that never answered")
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Close did not return after its deadline: it waits on a collector that never answers")
	}
	s := c.Stats()
	mu.Lock()
	defer mu.Unlock()
	if requests == 0 || s.Posted != 0 || s.Dropped != uint64(len(dgs)) {
		t.Fatalf("%d requests reached the collector; stats %+v, want all %d batches dropped and counted", requests, s, len(dgs))
	}
}

// queuedCollector is a one-worker collector sink for url with dgs queued.
func queuedCollector(t *testing.T, url string, dgs [][]byte) *CollectorSink {
	t.Helper()
	c := NewCollectorSink(url+"/api/traces", 1<<20, 1, slog.New(slog.DiscardHandler))
	for _, p := range dgs {
		if err := c.Send(p, guestid.Named("peer")); err != nil {
			t.Fatal(err)
		}
	}
	return c
}

// TestCollectorOutageIsSaidAndHeldPerGuest: an outage is logged as it
// begins and as it ends, with what was held; Stats show it meanwhile; and
// a guest's flush waits for its own batches only, told what the sink
// still holds and lost of them.
func TestCollectorOutageIsSaidAndHeldPerGuest(t *testing.T) {
	dgs := jaegertest.Capture(t, "svc", jaegertest.SmallTrace)
	var up atomic.Bool
	var accepted atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		if !up.Load() {
			w.WriteHeader(http.StatusBadGateway)
			return
		}
		accepted.Add(1)
		w.WriteHeader(http.StatusAccepted)
	}))
	defer srv.Close()
	var logs testutil.SyncBuffer
	c := NewCollectorSink(srv.URL+"/api/traces", 1<<20, 2, slog.New(slog.NewTextHandler(&logs, nil)))
	defer c.Close(context.Background())
	for _, p := range dgs {
		if err := c.Send(p, guestid.ID{Guest: "vsock:vm(3)", Conn: "vsock:vm(3):1025"}); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	held, lost, err := c.FlushGuest(ctx, "vsock:vm(3)")
	cancel()
	if err == nil || held != len(dgs) || lost != 0 {
		t.Fatalf("flush of the guest during the outage: held %d, lost %d, err %v; want %d held and an error", held, lost, err, len(dgs))
	}
	if held, _, err := c.FlushGuest(context.Background(), "vsock:vm(4)"); err != nil || held != 0 {
		t.Fatalf("another guest, which sent nothing, waited: held %d, err %v", held, err)
	}
	if st := c.Stats(); st.Up || st.Queued+st.InFlight != len(dgs) || st.Retries == 0 || !st.LastSuccess.IsZero() {
		t.Fatalf("stats during the outage: %+v", st)
	}
	up.Store(true)
	if err := c.Reopen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel = context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if held, lost, err := c.FlushGuest(ctx, "vsock:vm(3)"); err != nil || held != 0 || lost != 0 {
		t.Fatalf("flush once the collector is back: held %d, lost %d, err %v", held, lost, err)
	}
	if accepted.Load() != int64(len(dgs)) || !c.Stats().Up || c.Stats().LastSuccess.IsZero() {
		t.Fatalf("accepted %d of %d; stats %+v", accepted.Load(), len(dgs), c.Stats())
	}
	out := logs.String()
	for _, want := range []string{"collector unreachable: holding batches and retrying", "collector reachable again"} {
		if n := strings.Count(out, want); n != 1 {
			t.Errorf("%q logged %d times, want once:\n%s", want, n, out)
		}
	}
}

// TestCollectorHandsOverWhatItHolds: a sink whose OTLP endpoint is down
// stops at once for a handover, dropping nothing, requests cut in their
// retry put back whole; a successor that adopts what it held delivers
// every span once, when the endpoint is back.
func TestCollectorHandsOverWhatItHolds(t *testing.T) {
	dgs := jaegertest.Capture(t, "svc", func(tr opentracing.Tracer) { jaegertest.SmallTrace(tr); jaegertest.BigTrace(tr) })
	ep := otlptest.New(t)
	open := func() *CollectorSink {
		s, err := NewOTLPSink(OTLPConfig{Endpoint: ep.URL + "/v1/traces"}, 1<<20, 2, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	first := open()
	for _, p := range dgs {
		if err := first.Send(p, testPeer); err != nil {
			t.Fatal(err)
		}
	}
	testutil.Eventually(t, 5*time.Second, "the endpoint found down", func() bool { return !first.Stats().Up })
	start := time.Now()
	held := first.Handover(context.Background()) // no deadline: it must not wait for a dead endpoint
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("the handover waited %v for an endpoint that is down", took)
	}
	if st := first.Stats(); st.Dropped != 0 || len(held) != len(dgs) {
		t.Fatalf("handed %d batches of %d; stats %+v", len(held), len(dgs), st)
	}
	ep.Up.Store(true)
	next := open()
	defer next.Close(context.Background())
	next.Adopt(held)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := next.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	want := 0
	for _, p := range dgs {
		b, err := jaegerthrift.DecodeEmitBatch(p)
		if err != nil {
			t.Fatal(err)
		}
		want += len(b.Spans)
	}
	if got, twice := ep.Spans(); got != want || twice != 0 {
		t.Fatalf("%d distinct spans delivered (%d of them twice), want %d once each", got, twice, want)
	}
}
