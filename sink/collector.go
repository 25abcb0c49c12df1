package sink

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/katatrace/katatrace/internal/lograte"
	"github.com/katatrace/katatrace/jaegerthrift"
	"go.opentelemetry.io/collector/pdata/ptrace"
)

// CollectorSink forwards batches to a collector: a Jaeger collector's HTTP
// endpoint (POST /api/traces, Thrift binary), so a host needs no Jaeger
// agent and no UDP hop, or an OTLP endpoint (see NewOTLPSink). Batches wait
// in a bounded queue (drop oldest, counted) and are retried with backoff
// while the collector is unreachable or failing; one it refuses for good
// is dropped and counted, never retried forever.
type CollectorSink struct {
	url string // for logs
	b   backend
	log *slog.Logger

	mu       sync.Mutex
	cond     *sync.Cond
	queue    [][]byte
	queued   int // bytes
	maxBytes int
	busy     int // batches being posted
	closed   bool
	stats    CollectorStats
	dropLog  *lograte.Every
	retry    retryPolicy
	wg       sync.WaitGroup
	// life ends when Close runs out of time: requests in flight and
	// retry waits are cut, what is left is dropped and counted.
	life    context.Context
	endLife context.CancelFunc
}

// CollectorStats counts what a CollectorSink did.
type CollectorStats struct {
	Posted, Spans, Dropped, Rejected, Retries uint64
}

// backend is where a CollectorSink's batches go.
type backend interface {
	// encode turns one datagram from peer into a request body, and counts
	// its spans.
	encode(p []byte, peer string) (body []byte, spans int, err error)
	// send delivers one body: nil once accepted, a *rejection when refused
	// for good, any other error when worth retrying.
	send(ctx context.Context, body []byte) error
	// close releases connections.
	close()
}

// rejection is a batch the collector refused for good (a 4xx, say).
type rejection struct{ reason string }

func (r *rejection) Error() string { return r.reason }

// jaegerHTTP is a Jaeger collector's /api/traces.
type jaegerHTTP struct {
	url    string
	client *http.Client
}

func (j jaegerHTTP) encode(p []byte, _ string) ([]byte, int, error) {
	b, err := jaegerthrift.DecodeEmitBatch(p)
	if err != nil {
		return nil, 0, err
	}
	body, err := jaegerthrift.EncodeBatchBinary(b)
	if err != nil {
		return nil, 0, fmt.Errorf("encode batch: %w", err)
	}
	return body, len(b.Spans), nil
}

func (j jaegerHTTP) send(ctx context.Context, body []byte) error {
	return postHTTP(ctx, j.client, j.url, "application/x-thrift", nil, body, func(status int) bool {
		return status == http.StatusTooManyRequests || status/100 == 5
	})
}

func (j jaegerHTTP) close() { j.client.CloseIdleConnections() }

// postHTTP posts body; a status that is not 2xx is retried if retry says
// so, else a rejection.
func postHTTP(ctx context.Context, client *http.Client, url, contentType string, headers map[string]string, body []byte, retry func(status int) bool) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", contentType)
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	switch {
	case resp.StatusCode/100 == 2:
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		return nil
	case retry(resp.StatusCode):
		err := fmt.Errorf("status %s", resp.Status)
		if after := retryAfter(resp.Header, time.Now()); after > 0 {
			return &throttled{err: err, after: after}
		}
		return err
	}
	return &rejection{reason: fmt.Sprintf("status %s: %s", resp.Status, bytes.TrimSpace(msg))}
}

// NewCollectorSink posts to a Jaeger collector's url with workers
// concurrent requests.
func NewCollectorSink(url string, maxBytes, workers int, log *slog.Logger) *CollectorSink {
	return newCollectorSink(url, jaegerHTTP{url: url, client: &http.Client{Timeout: 10 * time.Second}}, maxBytes, workers, log)
}

func newCollectorSink(url string, b backend, maxBytes, workers int, log *slog.Logger) *CollectorSink {
	c := &CollectorSink{
		url: url, b: b, log: log, maxBytes: maxBytes,
		dropLog: lograte.NewEvery(5 * time.Second),
		retry:   defaultRetry,
	}
	c.cond = sync.NewCond(&c.mu)
	c.life, c.endLife = context.WithCancel(context.Background())
	for range max(workers, 1) {
		c.wg.Add(1)
		go c.worker()
	}
	return c
}

// Send decodes one emitBatch datagram and queues it for the collector.
func (c *CollectorSink) Send(p []byte, peer string) error {
	body, spans, err := c.b.encode(p, peer)
	if err != nil {
		return err
	}
	return c.enqueue(body, spans)
}

// SendTraces queues spans in the OpenTelemetry model: as they are for an
// OTLP endpoint, as Jaeger batches for a Jaeger collector.
func (c *CollectorSink) SendTraces(td ptrace.Traces, peer string) error {
	if _, ok := c.b.(jaegerHTTP); ok {
		return sendJaeger(c, td, peer)
	}
	body, spans, err := otlpRequest(td, peer)
	if err != nil {
		return err
	}
	return c.enqueue(body, spans)
}

// enqueue queues one request body, dropping the oldest beyond maxBytes.
func (c *CollectorSink) enqueue(body []byte, spans int) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return errors.New("collector sink closed")
	}
	for c.queued+len(body) > c.maxBytes && len(c.queue) > 0 {
		c.queued -= len(c.queue[0])
		c.queue = c.queue[1:]
		c.stats.Dropped++
		if ok, n := c.dropLog.Allow(); ok {
			c.log.Warn("collector queue full: dropped the oldest batch", "url", c.url,
				"dropped_total", c.stats.Dropped, "not_logged", n)
		}
	}
	c.queue = append(c.queue, body)
	c.queued += len(body)
	c.stats.Spans += uint64(spans)
	c.cond.Broadcast()
	return nil
}

// Flush waits until every queued batch was accepted by the collector
// (the queue empty, nothing in flight), or ctx ends.
func (c *CollectorSink) Flush(ctx context.Context) error {
	stop := context.AfterFunc(ctx, func() {
		c.mu.Lock()
		c.cond.Broadcast()
		c.mu.Unlock()
	})
	defer stop()
	c.mu.Lock()
	defer c.mu.Unlock()
	for len(c.queue) > 0 || c.busy > 0 {
		if ctx.Err() != nil {
			return fmt.Errorf("collector %s: %d batches not yet accepted: %w", c.url, len(c.queue)+c.busy, ctx.Err())
		}
		c.cond.Wait()
	}
	return nil
}

// Close flushes (bounded by ctx) and stops the workers. When ctx ends
// first, requests in flight are cut and what is still queued is dropped
// and counted: Close returns at ctx's end.
func (c *CollectorSink) Close(ctx context.Context) error {
	err := c.Flush(ctx)
	c.mu.Lock()
	c.closed = true
	if err != nil {
		c.endLife()
	}
	c.cond.Broadcast()
	c.mu.Unlock()
	c.wg.Wait()
	c.endLife()
	c.b.close()
	st := c.Stats()
	c.log.Info("collector closed", "url", c.url, "batches_posted", st.Posted, "spans", st.Spans,
		"dropped", st.Dropped, "refused", st.Rejected, "retries", st.Retries)
	return err
}

// Stats returns a snapshot of the counters.
func (c *CollectorSink) Stats() CollectorStats {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stats
}

func (c *CollectorSink) worker() {
	defer c.wg.Done()
	for {
		c.mu.Lock()
		for len(c.queue) == 0 && !c.closed {
			c.cond.Wait()
		}
		if len(c.queue) == 0 {
			c.mu.Unlock()
			return
		}
		if c.life.Err() != nil {
			c.dropQueued()
			c.mu.Unlock()
			return
		}
		body, n := c.take()
		c.busy++
		c.mu.Unlock()

		c.post(body, n)

		c.mu.Lock()
		c.busy--
		c.cond.Broadcast()
		c.mu.Unlock()
	}
}

// maxRequest bounds a request made of several queued ones: well below
// gRPC's default 4 MiB message limit.
const maxRequest = 1 << 20

// take removes the next request from the queue; c.mu is held. OTLP
// requests queued together go as one: an export request's encoding
// concatenated with another's is the request holding both's spans, and
// one request per span (a Kata agent's frames) would cost the collector
// and the host a round trip each. It returns how many it took.
func (c *CollectorSink) take() ([]byte, int) {
	n, size := 1, len(c.queue[0])
	if _, jaeger := c.b.(jaegerHTTP); !jaeger {
		for n < len(c.queue) && size+len(c.queue[n]) <= maxRequest {
			size += len(c.queue[n])
			n++
		}
	}
	body := c.queue[0]
	if n > 1 {
		body = bytes.Join(c.queue[:n], nil)
	}
	clear(c.queue[:n])
	c.queue = c.queue[n:]
	c.queued -= size
	return body, n
}

// post sends one batch, retrying (see retryPolicy) until the collector
// takes it, refuses it for good (4xx), the batch has had its time, or the
// sink is closed.
func (c *CollectorSink) post(body []byte, n int) {
	r := c.retry.begin(time.Now())
	for attempt := 1; ; attempt++ {
		ctx, cancel := context.WithTimeout(c.life, 10*time.Second)
		err := c.b.send(ctx, body)
		cancel()
		var rej *rejection
		switch {
		case err == nil:
			c.mu.Lock()
			c.stats.Posted += uint64(n)
			c.mu.Unlock()
			return
		case errors.As(err, &rej):
			c.mu.Lock()
			c.stats.Rejected += uint64(n)
			c.mu.Unlock()
			c.log.Error("collector refused a batch; dropped", "url", c.url, "err", err)
			return
		}
		wait, again := r.next(err, time.Now())
		c.mu.Lock()
		closed := c.closed
		c.stats.Retries++
		if closed || !again {
			c.stats.Dropped += uint64(n)
		}
		c.mu.Unlock()
		switch {
		case closed:
			c.log.Error("collector unreachable at shutdown; batch dropped", "url", c.url, "err", err)
			return
		case !again:
			c.log.Error("collector still failing after the retry time; batch dropped", "url", c.url, "err", err,
				"attempts", attempt, "retry_max_elapsed", c.retry.MaxElapsed.String())
			return
		}
		lvl := slog.LevelDebug
		if attempt == 1 {
			lvl = slog.LevelWarn
		}
		c.log.Log(context.Background(), lvl, "collector post failed; retrying", "url", c.url, "err", err,
			"attempt", attempt, "retry_in", wait.Round(time.Millisecond).String())
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-c.life.Done():
			t.Stop()
		}
	}
}

// dropQueued drops and counts every batch still queued; c.mu is held.
func (c *CollectorSink) dropQueued() {
	if n := len(c.queue); n > 0 {
		c.stats.Dropped += uint64(n)
		c.log.Error("collector unreachable at shutdown; queued batches dropped", "url", c.url, "batches", n)
	}
	clear(c.queue)
	c.queue, c.queued = c.queue[:0], 0
}
