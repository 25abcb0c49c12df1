package jaegertest

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opentracing/opentracing-go"
	jaegercfg "github.com/uber/jaeger-client-go"
	"github.com/uber/jaeger-client-go/thrift"
	"github.com/uber/jaeger-client-go/thrift-gen/jaeger"

	"github.com/katatrace/katatrace/internal/testutil"
)

// Collector is a Jaeger collector's HTTP endpoint for tests (POST, Thrift
// binary batches, as /api/traces takes them) that answers each request
// only after Delay, a collector far away or busy, and counts every span
// it accepted, by span id. A request its client gave up on before the
// answer is not counted.
type Collector struct {
	URL string

	delay time.Duration
	mu    sync.Mutex
	seen  map[int64]int
	reqs  int
}

// NewCollector starts a collector answering after delay; it stops when
// the test ends.
func NewCollector(t testing.TB, delay time.Duration) *Collector {
	c := &Collector{delay: delay, seen: map[int64]int{}}
	srv := httptest.NewServer(http.HandlerFunc(c.serve))
	t.Cleanup(srv.Close)
	c.URL = srv.URL + "/api/traces"
	return c
}

func (c *Collector) serve(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return
	}
	b, err := ReadBatch(body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	t := time.NewTimer(c.delay)
	defer t.Stop()
	select {
	case <-t.C:
	case <-r.Context().Done():
		return // the client gave up: not accepted
	}
	c.mu.Lock()
	c.reqs++
	for _, s := range b.Spans {
		c.seen[s.SpanId]++
	}
	c.mu.Unlock()
	w.WriteHeader(http.StatusAccepted)
}

// ReadBatch reads a Jaeger collector's request body: one Thrift binary
// Batch (the sink joins a guest's batches into one).
func ReadBatch(body []byte) (*jaeger.Batch, error) {
	var b jaeger.Batch
	buf := thrift.NewTMemoryBufferLen(len(body))
	_, _ = buf.Write(body)
	if err := b.Read(context.Background(), thrift.NewTBinaryProtocolConf(buf, &thrift.TConfiguration{})); err != nil {
		return nil, fmt.Errorf("not a Thrift batch: %w", err)
	}
	if buf.Len() != 0 {
		return nil, fmt.Errorf("%d bytes after the Thrift batch", buf.Len())
	}
	return &b, nil
}

// Spans is how many distinct spans were accepted, and how many of them
// more than once.
func (c *Collector) Spans() (distinct, twice int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return testutil.Distinct(c.seen)
}

// Requests is how many requests were accepted.
func (c *Collector) Requests() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.reqs
}

// OneSpanEach makes n emitBatch datagrams of one span each, as a
// jaeger-client-go tracer whose reporter flushes every span sends them.
func OneSpanEach(t testing.TB, service string, n int) [][]byte {
	t.Helper()
	sink := testutil.NewUDPSink(t)
	tr, err := jaegercfg.NewUDPTransport(strings.TrimPrefix(sink.Addr(), "udp://"), 0)
	if err != nil {
		t.Fatal(err)
	}
	tracer, closer := jaegercfg.NewTracer(service, jaegercfg.NewConstSampler(true), flushEach{tr})
	for i := range n {
		tracer.StartSpan("op", opentracing.Tag{Key: "i", Value: i}).Finish()
		if i%100 == 99 {
			sink.WaitFor(i+1, 10*time.Second) // never more in flight than the socket holds
		}
	}
	_ = closer.Close()
	_ = tr.Close()
	out := sink.WaitFor(n, 10*time.Second)
	if len(out) != n {
		t.Fatalf("made %d emitBatch datagrams, want %d", len(out), n)
	}
	return out
}

// flushEach reports each span in a batch of its own.
type flushEach struct{ tr jaegercfg.Transport }

func (r flushEach) Report(s *jaegercfg.Span) { _, _ = r.tr.Append(s); _, _ = r.tr.Flush() }
func (r flushEach) Close()                   {}
