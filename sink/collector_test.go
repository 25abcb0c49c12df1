package sink

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"slices"
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
	"github.com/uber/jaeger-client-go/thrift"
	"github.com/uber/jaeger-client-go/thrift-gen/jaeger"
)

// TestCollectorRetriesAndDrops: a collector that fails for a while gets
// every batch's spans once it recovers (one guest's batches may go in
// one request); one that refuses a batch (4xx) has it dropped and
// counted, not retried forever.
func TestCollectorRetriesAndDrops(t *testing.T) {
	dgs := jaegertest.Capture(t, "svc", func(tr opentracing.Tracer) { jaegertest.SmallTrace(tr); jaegertest.BigTrace(tr) })
	want := spansIn(t, dgs)
	var mu sync.Mutex
	failures, got := 3, 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		defer mu.Unlock()
		b, err := jaegertest.ReadBatch(body)
		switch {
		case r.Header.Get("Content-Type") != "application/x-thrift" || err != nil:
			w.WriteHeader(http.StatusBadRequest)
		case failures > 0:
			failures--
			w.WriteHeader(http.StatusServiceUnavailable)
		default:
			got += len(b.Spans)
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
	if got != want || s.Posted != uint64(len(dgs)) || s.Retries < 3 || s.Dropped != 0 {
		t.Fatalf("collector got %d of %d spans; stats %+v", got, want, s)
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
	c := NewCollectorSink(srv.URL, 40000, 1, 0, slog.New(slog.DiscardHandler))
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
	c := NewCollectorSink(srv.URL, keep*size, 1, 0, slog.New(slog.DiscardHandler))
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
	c := NewCollectorSink(url+"/api/traces", 1<<20, 1, 0, slog.New(slog.DiscardHandler))
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
	c := NewCollectorSink(srv.URL+"/api/traces", 1<<20, 2, 0, slog.New(slog.NewTextHandler(&logs, nil)))
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
	want := spansIn(t, dgs)
	if got, twice := ep.Spans(); got != want || twice != 0 {
		t.Fatalf("%d distinct spans delivered (%d of them twice), want %d once each", got, twice, want)
	}
}

// jaegerRequests is a Jaeger collector that records each request's
// process (its service name) and span ids, in order; hold, if not nil,
// keeps requests from being answered until it is closed.
type jaegerRequests struct {
	mu   sync.Mutex
	reqs []jaegerRequest
}

type jaegerRequest struct {
	service string
	spans   []int64
	size    int
}

func (j *jaegerRequests) serve(t *testing.T, hold chan struct{}) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var b jaeger.Batch
		buf := thrift.NewTMemoryBufferLen(len(body))
		_, _ = buf.Write(body)
		if err := b.Read(context.Background(), thrift.NewTBinaryProtocolConf(buf, &thrift.TConfiguration{})); err != nil || buf.Len() != 0 {
			t.Errorf("not one Thrift batch (%d bytes left): %v", buf.Len(), err)
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		req := jaegerRequest{service: b.Process.ServiceName, size: len(body)}
		for _, s := range b.Spans {
			req.spans = append(req.spans, s.SpanId)
		}
		j.mu.Lock()
		j.reqs = append(j.reqs, req)
		j.mu.Unlock()
		if hold != nil {
			<-hold
		}
		w.WriteHeader(http.StatusAccepted)
	}))
	t.Cleanup(srv.Close)
	return srv
}

// spanIDs are the span ids of Jaeger datagrams, in order.
func spanIDs(t *testing.T, dgs [][]byte) []int64 {
	t.Helper()
	var ids []int64
	for _, p := range dgs {
		b, err := jaegerthrift.DecodeEmitBatch(p)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range b.Spans {
			ids = append(ids, s.SpanId)
		}
	}
	return ids
}

// TestCollectorJoinsAGuestsBatches: batches queued while a Jaeger
// collector was busy go in as few requests as a Batch allows: each
// request holds one guest's batches of one process, in the order sent;
// other guests' batches, queued among them, are not joined with them and
// keep their own order.
func TestCollectorJoinsAGuestsBatches(t *testing.T) {
	a := jaegertest.OneSpanEach(t, "svc-a", 20)
	other := jaegertest.OneSpanEach(t, "svc-b", 5) // the same guest, another process
	b := jaegertest.OneSpanEach(t, "svc-a", 20)    // another guest, the same process
	hold := make(chan struct{})
	var col jaegerRequests
	srv := col.serve(t, hold)
	c := NewCollectorSink(srv.URL+"/api/traces", 16<<20, 1, 0, slog.New(slog.DiscardHandler))
	ga, gb := guestid.ID{Guest: "vsock:vm(3)", Conn: "c3"}, guestid.ID{Guest: "vsock:vm(4)", Conn: "c4"}
	// The first request holds the worker; the rest queue behind it, the
	// guests' batches interleaved, guest a's process changing midway.
	send := func(p []byte, g guestid.ID) {
		if err := c.Send(p, g); err != nil {
			t.Fatal(err)
		}
	}
	send(a[0], ga)
	testutil.Eventually(t, 10*time.Second, "the first request out", func() bool { return c.Stats().InFlight == 1 })
	for i := 1; i < 20; i++ {
		if i == 10 {
			for _, p := range other {
				send(p, ga)
			}
		}
		send(a[i], ga)
		send(b[i], gb)
	}
	close(hold)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Close(ctx); err != nil {
		t.Fatal(err)
	}
	wantA := spanIDs(t, a)
	wantA = append(append(wantA[:10:10], spanIDs(t, other)...), wantA[10:]...)
	wantB := spanIDs(t, b)[1:]
	// The guests' batches, as requests, in order: a's first alone (it was
	// taken before the rest were queued); a's 9 more of svc-a; a's svc-b
	// batches; a's last 10 (svc-a again: not joined over the svc-b ones);
	// b's 19 joined, whenever they went.
	col.mu.Lock()
	defer col.mu.Unlock()
	var gotA, gotB []int64
	var shapes []string
	for _, r := range col.reqs {
		inB := slices.Contains(wantB, r.spans[0])
		for _, id := range r.spans {
			if slices.Contains(wantB, id) != inB {
				t.Fatalf("a request joined two guests' batches: %+v", r)
			}
		}
		if inB {
			gotB = append(gotB, r.spans...)
		} else {
			gotA = append(gotA, r.spans...)
			shapes = append(shapes, fmt.Sprintf("%s×%d", r.service, len(r.spans)))
		}
	}
	if !slices.Equal(gotA, wantA) || !slices.Equal(gotB, wantB) {
		t.Fatalf("spans as the collector got them:\nguest a %v\nwant    %v\nguest b %v\nwant    %v", gotA, wantA, gotB, wantB)
	}
	if want := []string{"svc-a×1", "svc-a×9", "svc-b×5", "svc-a×10"}; !slices.Equal(shapes, want) {
		t.Errorf("guest a's requests: %v, want %v", shapes, want)
	}
	if n := len(col.reqs) - len(shapes); n != 1 {
		t.Errorf("guest b's 19 batches went in %d requests, want 1", n)
	}
	if st := c.Stats(); st.Posted != uint64(len(a)+len(other)+len(b)-1) || st.Queued != 0 || st.QueuedBytes != 0 {
		t.Errorf("stats %+v", st)
	}
}

// TestCollectorJoinsWithinTheBound: joined requests stay within
// maxRequest, and carry every span once, in order.
func TestCollectorJoinsWithinTheBound(t *testing.T) {
	dgs := jaegertest.Capture(t, "svc", func(tr opentracing.Tracer) {
		for range 40 { // a few MiB: several requests' worth
			jaegertest.BigTrace(tr)
		}
	})
	hold := make(chan struct{})
	var col jaegerRequests
	srv := col.serve(t, hold)
	c := NewCollectorSink(srv.URL+"/api/traces", 64<<20, 1, 0, slog.New(slog.DiscardHandler))
	g := guestid.ID{Guest: "vsock:vm(3)", Conn: "c3"}
	if err := c.Send(dgs[0], g); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, "the first request out", func() bool { return c.Stats().InFlight == 1 })
	for _, p := range dgs[1:] {
		if err := c.Send(p, g); err != nil {
			t.Fatal(err)
		}
	}
	total := c.Stats().QueuedBytes
	close(hold)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Close(ctx); err != nil {
		t.Fatal(err)
	}
	col.mu.Lock()
	defer col.mu.Unlock()
	var got []int64
	for i, r := range col.reqs {
		if r.size > maxRequest {
			t.Errorf("request %d holds %d bytes, beyond %d", i, r.size, maxRequest)
		}
		got = append(got, r.spans...)
	}
	if want := spanIDs(t, dgs); !slices.Equal(got, want) {
		t.Fatalf("the collector got %d spans, want the %d sent, in order", len(got), len(want))
	}
	// The first request alone, then the rest in requests filled to about
	// the bound.
	if want := 1 + (total+maxRequest-1)/maxRequest; len(col.reqs) < want || len(col.reqs) > 2*want {
		t.Errorf("%d bytes queued went in %d requests, want about %d", total, len(col.reqs)-1, want-1)
	}
}

// TestCollectorWorkersOverlap: against a collector that takes 50 ms per
// request, the sink has --collector-workers requests in flight, never
// more, over as many kept connections (not dialling anew for each).
func TestCollectorWorkersOverlap(t *testing.T) {
	const workers, guests = 16, 100
	var mu sync.Mutex
	cur, peak, conns := 0, 0, 0
	// Requests wait (at most a few seconds in all) until the workers are
	// all in, so that the peak depends on the sink, not on the scheduler.
	full := make(chan struct{})
	giveUp := make(chan struct{})
	time.AfterFunc(5*time.Second, func() { close(giveUp) })
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		mu.Lock()
		if cur++; cur > peak {
			peak = cur
			if peak == workers {
				close(full)
			}
		}
		mu.Unlock()
		select {
		case <-full:
		case <-giveUp:
		}
		time.Sleep(50 * time.Millisecond)
		mu.Lock()
		cur--
		mu.Unlock()
		w.WriteHeader(http.StatusAccepted)
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			mu.Lock()
			conns++
			mu.Unlock()
		}
	}
	srv.Start()
	defer srv.Close()
	// Every guest flushes thrice, each time from another process (three
	// services), so that no two of its batches join: 300 requests.
	var dgs [][]byte
	for _, svc := range []string{"svc-1", "svc-2", "svc-3"} {
		dgs = append(dgs, jaegertest.OneSpanEach(t, svc, guests)...)
	}
	var to Target
	if err := to.UnmarshalText([]byte(srv.URL + "/api/traces")); err != nil {
		t.Fatal(err)
	}
	s, err := to.Open(Options{QueueBytes: 16 << 20, Workers: workers, Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	c := s.(*CollectorSink)
	for i, p := range dgs {
		if err := c.Send(p, guestid.ID{Guest: fmt.Sprintf("vsock:vm(%d)", 3+i%guests), Conn: "c"}); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := c.Close(ctx); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if peak != workers {
		t.Errorf("at most %d requests were in flight at once, want %d", peak, workers)
	}
	// A dial may race a connection coming back: a little slack. (With
	// net/http's default of two idle connections kept, 40 and more.)
	if conns > workers+4 {
		t.Errorf("%d connections for %d workers: connections closed after a request, and dialled again", conns, workers)
	}
	if st := c.Stats(); st.Posted != uint64(len(dgs)) || st.Dropped+st.Rejected != 0 {
		t.Errorf("stats %+v", st)
	}
}

// spansIn is how many spans emitBatch datagrams hold.
func spansIn(t *testing.T, dgs [][]byte) int {
	t.Helper()
	n := 0
	for _, p := range dgs {
		b, err := jaegerthrift.DecodeEmitBatch(p)
		if err != nil {
			t.Fatal(err)
		}
		n += len(b.Spans)
	}
	return n
}
