package sink

import (
	"bytes"
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/katatrace/katatrace/guestid"
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

	mu sync.Mutex
	// cond wakes those waiting for the queue to empty (flushes, a stop);
	// work wakes workers, one a batch queued, so that a span does not
	// wake every worker.
	cond, work *sync.Cond
	// waiters are flushes and stops waiting: no worker lingers for them.
	waiters  int
	linger   time.Duration
	queue    []queued
	queued   int // bytes
	maxBytes int
	busy     int // requests being posted
	flying   int // the batches they hold
	closed   bool
	// handingOver is set by Handover: batches cut short go back to the
	// queue, for a successor, instead of being dropped.
	handingOver bool
	stats       CollectorStats
	// held counts, per guest (guestid.ID.Guest), batches queued or in flight; lost
	// those dropped or refused, in all: a guest's flush is answered with
	// both.
	held, lost map[string]uint64
	// down is set while the collector is unreachable (from the first
	// failed attempt to the next accepted one): an outage is logged as it
	// begins, now and then while it lasts, and as it ends.
	down      bool
	downSince time.Time
	downLog   *lograte.Every
	dropLog   *lograte.Every
	retry     retryPolicy
	timeout   time.Duration // one request's
	partLog   *lograte.Every
	wg        sync.WaitGroup
	// life ends when Close runs out of time: requests in flight and
	// retry waits are cut, what is left is dropped and counted.
	life    context.Context
	endLife context.CancelFunc
	// retryNow is closed (and replaced) by Reopen: batches waiting to be
	// retried are tried at once.
	retryNow chan struct{}
}

// defaultTimeout bounds one request, as OpenTelemetry's exporters do.
const defaultTimeout = 10 * time.Second

// CollectorStats counts what a CollectorSink did, and says what it holds.
type CollectorStats struct {
	Posted, Spans, Dropped, Rejected, Retries uint64
	// RejectedSpans are spans an OTLP endpoint rejected from requests it
	// took (its partial success): lost, and not in Rejected's batches.
	RejectedSpans uint64
	// Queued batches and their bytes wait for a worker; InFlight requests
	// (each of one batch or more) are being posted (or wait to be retried).
	Queued, QueuedBytes, InFlight int
	// Up is false while the collector is unreachable: from a failed
	// attempt to the next accepted one. LastSuccess is when it last
	// accepted a request (zero: never).
	Up          bool
	LastSuccess time.Time
}

// queued is one request body waiting, and the guest it came from.
type queued struct {
	body  []byte
	guest string
	// A Jaeger body joins others of its guest's with the same Process:
	// where its Process ends (jaegerthrift.Body; 0: it joins none, as an
	// OTLP body or one handed over), and how many spans it holds.
	procEnd, spans int
}

// jaegerBody is q's body with its parts; q.procEnd > 0.
func (q *queued) jaegerBody() jaegerthrift.Body {
	return jaegerthrift.Body{Bytes: q.body, ProcessEnd: q.procEnd, Spans: q.spans}
}

// backend is where a CollectorSink's batches go.
type backend interface {
	// encode turns one datagram from a guest into a request body, and
	// counts its spans.
	encode(p []byte, from guestid.ID) (body []byte, spans int, err error)
	// send delivers one body: nil once accepted, a *rejection when refused
	// for good, any other error when worth retrying.
	send(ctx context.Context, body []byte) error
	// reset drops idle connections, so that the next request connects
	// anew; close releases them all.
	reset()
	close()
}

// rejection is a batch the collector refused for good (a 4xx, say), or
// that met a server of another protocol: no outage, that would pass.
type rejection struct {
	reason   string
	status   int    // HTTP's, if any
	cause    string // the likely cause, if known
	protocol bool   // the server speaks another protocol
}

func (r *rejection) Error() string {
	if r.cause != "" {
		return r.reason + " (likely: " + r.cause + ")"
	}
	return r.reason
}

// partialSuccess is a request the endpoint took but for some of its
// spans (OTLP's partial success): those are lost, the rest delivered.
type partialSuccess struct {
	rejected uint64
	reason   string
}

func (p *partialSuccess) Error() string {
	return fmt.Sprintf("the endpoint rejected %d spans of the request: %s", p.rejected, p.reason)
}

// withCause completes an HTTP post's error with its likely cause (by
// status, or a protocol error): an answer in HTTP/2 frames to an HTTP/1
// request (a gRPC server) is no outage, and is not retried.
func withCause(err error, cause func(status int, protocol string) string) error {
	var rej *rejection
	if errors.As(err, &rej) {
		rej.cause = cause(rej.status, "")
		return err
	}
	// net/http's words for bytes no HTTP/1 server sends: an answer that
	// is no status line, or bytes before the request was even written (an
	// HTTP/2 server's preface, which is how a gRPC server greets).
	if msg := err.Error(); strings.Contains(msg, "malformed HTTP response") || strings.Contains(msg, "malformed HTTP status code") ||
		strings.Contains(msg, "readLoopPeekFailLocked: %!w(<nil>)") {
		return &rejection{reason: msg, protocol: true, cause: cause(0, "http2")}
	}
	if tlsRefused(err) {
		return &rejection{reason: err.Error(), protocol: true, cause: noTLS}
	}
	return err
}

// jaegerHTTP is a Jaeger collector's /api/traces.
type jaegerHTTP struct {
	url    string
	client *http.Client
}

func (j jaegerHTTP) encode(p []byte, _ guestid.ID) ([]byte, int, error) {
	b, err := j.encodeBody(p)
	return b.Bytes, b.Spans, err
}

// encodeBody makes one datagram's request body, with what joining it to
// others takes (found once, here: never decoded again per request).
func (jaegerHTTP) encodeBody(p []byte) (jaegerthrift.Body, error) {
	b, err := jaegerthrift.DecodeEmitBatch(p)
	if err != nil {
		return jaegerthrift.Body{}, err
	}
	body, err := jaegerthrift.EncodeBody(b)
	if err != nil {
		return jaegerthrift.Body{}, fmt.Errorf("encode batch: %w", err)
	}
	return body, nil
}

func (j jaegerHTTP) send(ctx context.Context, body []byte) error {
	_, err := postHTTP(ctx, j.client, j.url, "application/x-thrift", nil, body, func(status int) bool {
		return status == http.StatusTooManyRequests || status/100 == 5
	})
	if err != nil {
		return withCause(err, jaegerCause)
	}
	return nil
}

// jaegerCause is the likely cause of a Jaeger collector's refusal or
// protocol error.
func jaegerCause(status int, protocol string) string {
	switch {
	case protocol != "":
		return "the endpoint answered in HTTP/2 frames, not HTTP/1: is it OTLP/gRPC (port 4317)? for OTLP/gRPC give otlp://HOST:PORT"
	case status == http.StatusNotFound || status == http.StatusMethodNotAllowed || status == http.StatusUnsupportedMediaType:
		return "no Jaeger collector at this URL: its path is /api/traces, on port 14268; OTLP is otlp://HOST:4317 or otlphttp://HOST:4318"
	}
	return ""
}

func (j jaegerHTTP) reset() { j.client.CloseIdleConnections() }
func (j jaegerHTTP) close() { j.client.CloseIdleConnections() }

// postHTTP posts body and returns the answer's body (its first 64 KiB);
// a status that is not 2xx is retried if retry says so, else a
// rejection.
func postHTTP(ctx context.Context, client *http.Client, url, contentType string, headers map[string]string, body []byte, retry func(status int) bool) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", contentType)
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode/100 == 2:
		answer, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		return answer, nil
	case retry(resp.StatusCode):
		err := fmt.Errorf("status %s", resp.Status)
		if after := retryAfter(resp.Header, time.Now()); after > 0 {
			return nil, &throttled{err: err, after: after}
		}
		return nil, err
	}
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	return nil, &rejection{reason: fmt.Sprintf("status %s: %s", resp.Status, bytes.TrimSpace(msg)), status: resp.StatusCode}
}

// httpClient is a sink's HTTP client: a connection kept for each worker
// (net/http keeps two, and the rest would be made anew for every
// request), each request bounded by timeout.
func httpClient(workers int, timeout time.Duration, tc *tls.Config) *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = tc
	tr.MaxIdleConnsPerHost = max(workers, 1)
	tr.MaxIdleConns = max(tr.MaxIdleConns, workers)
	return &http.Client{Timeout: timeout, Transport: tr}
}

// NewCollectorSink posts to a Jaeger collector's url with workers
// concurrent requests, each attempt bounded by timeout (0: 10 s).
func NewCollectorSink(url string, maxBytes, workers int, timeout time.Duration, log *slog.Logger) *CollectorSink {
	timeout = cmp.Or(timeout, defaultTimeout)
	// One idle connection kept per worker: net/http keeps two by default,
	// and every request beyond would close its connection after it and
	// dial (and, with TLS, handshake) again for the next.
	if len(url) >= 8 && strings.EqualFold(url[:8], "https://") {
		fallbackRoots() // as an otlps:// sink: the image has no system roots
	}
	c := newCollectorSink(url, jaegerHTTP{url: url, client: httpClient(workers, timeout, nil)}, maxBytes, workers, log)
	c.timeout = timeout
	return c
}

func newCollectorSink(url string, b backend, maxBytes, workers int, log *slog.Logger) *CollectorSink {
	c := &CollectorSink{
		url: url, b: b, log: log, maxBytes: maxBytes,
		dropLog: lograte.NewEvery(5 * time.Second),
		downLog: lograte.NewEvery(30 * time.Second),
		retry:   defaultRetry,
		timeout: defaultTimeout,
		partLog: lograte.NewEvery(5 * time.Second),
		held:    map[string]uint64{},
		lost:    map[string]uint64{},
	}
	c.cond, c.work = sync.NewCond(&c.mu), sync.NewCond(&c.mu)
	if _, jaeger := b.(jaegerHTTP); !jaeger {
		// OTLP requests join whatever is queued: worth waiting for. A
		// Jaeger request joins one guest's batches only, and the rest
		// would wait behind it: those go as they come, many at once.
		c.linger = defaultLinger
	}
	c.retryNow = make(chan struct{})
	c.life, c.endLife = context.WithCancel(context.Background())
	for range max(workers, 1) {
		c.wg.Add(1)
		go c.worker()
	}
	return c
}

// Send decodes one emitBatch datagram and queues it for the collector.
func (c *CollectorSink) Send(p []byte, from guestid.ID) error {
	if j, ok := c.b.(jaegerHTTP); ok {
		b, err := j.encodeBody(p)
		if err != nil {
			return err
		}
		return c.push(queued{body: b.Bytes, guest: from.Guest, procEnd: b.ProcessEnd, spans: b.Spans}, b.Spans)
	}
	body, spans, err := c.b.encode(p, from)
	if err != nil {
		return err
	}
	return c.enqueue(body, spans, from.Guest)
}

// SendTraces queues spans in the OpenTelemetry model: as they are for an
// OTLP endpoint, as Jaeger batches for a Jaeger collector.
func (c *CollectorSink) SendTraces(td ptrace.Traces, from guestid.ID) error {
	if _, ok := c.b.(jaegerHTTP); ok {
		return sendJaeger(c, td, from)
	}
	enc, ok := c.b.(tracesEncoder)
	if !ok {
		// Every OTLP backend embeds otlpEncoder: one that did not would
		// lose the configured resource attributes without a word.
		return fmt.Errorf("%T encodes no OpenTelemetry traces", c.b)
	}
	body, spans, err := enc.encodeTraces(td, from)
	if err != nil {
		return err
	}
	return c.enqueue(body, spans, from.Guest)
}

// tracesEncoder is a backend that takes the OpenTelemetry model as it is
// (OTLP's, through otlpEncoder).
type tracesEncoder interface {
	encodeTraces(ptrace.Traces, guestid.ID) ([]byte, int, error)
	adds(guestid.ID) ResourceAdds
}

// OTLPResource is what an OTLP endpoint's requests put on the resource
// of from's spans; false for a Jaeger collector.
func (c *CollectorSink) OTLPResource(from guestid.ID) (ResourceAdds, bool) {
	enc, ok := c.b.(tracesEncoder)
	if !ok {
		return ResourceAdds{}, false
	}
	return enc.adds(from), true
}

// SendOTLP queues spans its sender encoded as OTLP, with OTLPResource's
// attributes.
func (c *CollectorSink) SendOTLP(body []byte, spans int, from guestid.ID) error {
	if _, ok := c.b.(tracesEncoder); !ok {
		return fmt.Errorf("%s takes no OTLP", c.url)
	}
	return c.enqueue(body, spans, from.Guest)
}

// enqueue queues one request body, dropping the oldest beyond maxBytes.
func (c *CollectorSink) enqueue(body []byte, spans int, guest string) error {
	return c.push(queued{body: body, guest: guest}, spans)
}

// push queues q, of spans spans, dropping the oldest beyond maxBytes.
func (c *CollectorSink) push(q queued, spans int) error {
	body, guest := q.body, q.guest
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return errors.New("collector sink closed")
	}
	if c.queued+len(body) > c.maxBytes && len(c.queue) > 0 {
		// A flush waiting for a dropped batch's guest is answered now.
		defer c.cond.Broadcast()
	}
	for c.queued+len(body) > c.maxBytes && len(c.queue) > 0 {
		old := c.queue[0]
		c.queued -= len(old.body)
		// Cleared, not only sliced off: the array's dead front would keep
		// the dropped body until the next append moves the queue, holding
		// up to twice the queue's bytes.
		c.queue[0] = queued{}
		c.queue = c.queue[1:]
		c.stats.Dropped++
		c.settle(old.guest, false)
		if ok, n := c.dropLog.Allow(); ok {
			c.log.Warn("collector queue full: dropped the oldest batch", "url", c.url,
				"dropped_total", c.stats.Dropped, "not_logged", n)
		}
	}
	c.queue = append(c.queue, q)
	c.queued += len(body)
	c.held[guest]++
	c.stats.Spans += uint64(spans)
	c.work.Signal()
	return nil
}

// settle ends the holding of one of guest's batches: accepted, or lost
// (dropped or refused); c.mu is held.
func (c *CollectorSink) settle(guest string, accepted bool) {
	if c.held[guest]--; c.held[guest] == 0 {
		delete(c.held, guest)
	}
	if !accepted {
		c.lost[guest]++
	}
}

// Flush waits until every queued batch was accepted by the collector
// (the queue empty, nothing in flight), or ctx ends.
func (c *CollectorSink) Flush(ctx context.Context) error {
	return c.wait(ctx, func() int { return len(c.queue) + c.busy })
}

// FlushGuest waits until the collector took every batch the guest sent
// so far (accepted, or dropped and counted), or ctx ends. It returns how
// many of them it still holds, and how many of the guest's it has lost in
// all (dropped or refused).
func (c *CollectorSink) FlushGuest(ctx context.Context, guest string) (held int, lost uint64, err error) {
	err = c.wait(ctx, func() int { return int(c.held[guest]) })
	c.mu.Lock()
	defer c.mu.Unlock()
	return int(c.held[guest]), c.lost[guest], err
}

// Reopen drops the connections kept to the collector (a name that now
// resolves elsewhere, a certificate renewed) and tries the batches
// waiting to be retried at once: an operator who brought the collector
// back need not wait out the backoff.
func (c *CollectorSink) Reopen() error {
	c.b.reset()
	c.mu.Lock()
	close(c.retryNow)
	c.retryNow = make(chan struct{})
	c.mu.Unlock()
	return nil
}

// Lost is how many of the guest's batches were dropped or refused, in
// all.
func (c *CollectorSink) Lost(guest string) uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lost[guest]
}

// wait waits until pending (called with c.mu held) is zero, or ctx ends.
func (c *CollectorSink) wait(ctx context.Context, pending func() int) error {
	stop := context.AfterFunc(ctx, func() {
		c.mu.Lock()
		c.cond.Broadcast()
		c.mu.Unlock()
	})
	defer stop()
	c.mu.Lock()
	defer c.mu.Unlock()
	c.waiters++
	defer func() { c.waiters-- }()
	c.work.Broadcast() // a worker lingering for more takes what there is now
	for {
		n := pending()
		if n == 0 {
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("collector %s: %d batches not yet accepted: %w", c.url, n, ctx.Err())
		}
		c.cond.Wait()
	}
}

// Close flushes (bounded by ctx) and stops the workers. When ctx ends
// first, requests in flight are cut and what is still queued is dropped
// and counted: Close returns at ctx's end, once it has said, per guest,
// what the endpoint did not take (the host had handed it on, and
// confirmed it to a v2 guest, which will not send it again).
func (c *CollectorSink) Close(ctx context.Context) error {
	c.mu.Lock()
	before := maps.Clone(c.lost)
	c.mu.Unlock()
	defer c.sayLost(before)
	err := c.Flush(ctx)
	c.mu.Lock()
	c.closed = true
	if err != nil {
		c.endLife()
	}
	c.cond.Broadcast()
	c.work.Broadcast()
	c.mu.Unlock()
	c.wg.Wait()
	c.endLife()
	c.b.close()
	st := c.Stats()
	c.log.Info("collector closed", "url", c.url, "batches_posted", st.Posted, "spans", st.Spans,
		"dropped", st.Dropped, "refused", st.Rejected, "retries", st.Retries)
	return err
}

// sayLost logs, per guest, the batches lost since before (Close's
// start): dropped, refused, or cut at the close.
func (c *CollectorSink) sayLost(before map[string]uint64) {
	c.mu.Lock()
	lost := map[string]uint64{}
	for g, n := range c.lost {
		if n > before[g] {
			lost[g] = n - before[g]
		}
	}
	c.mu.Unlock()
	for _, g := range slices.Sorted(maps.Keys(lost)) {
		c.log.Error("batches of this guest's lost: the endpoint had not accepted them when the sink closed", "url", c.url, "guest", g, "batches", lost[g])
	}
}

// HeldBatch is a request a collector sink had not delivered when it
// stopped, handed to its successor (Handover, Adopt): an encoded body, as
// the collector takes it, and the guest it is from.
type HeldBatch struct {
	Guest string `json:"guest"`
	Body  []byte `json:"body"`
}

// Handover stops the sink and returns what it holds, for a successor to
// send: what the collector takes while it is up it first lets it take
// (bounded by ctx); requests waiting to be retried go back in at once,
// and those under way once they are answered (or at ctx's end: then one
// the endpoint was taking as it was cut may arrive twice). Nothing is
// dropped.
func (c *CollectorSink) Handover(ctx context.Context) []HeldBatch {
	_ = c.wait(ctx, func() int {
		if c.down {
			return 0
		}
		return len(c.queue) + c.busy
	})
	c.mu.Lock()
	c.closed, c.handingOver = true, true
	close(c.retryNow) // retry waits end: their batches go back in
	c.retryNow = make(chan struct{})
	c.cond.Broadcast()
	c.work.Broadcast()
	c.mu.Unlock()
	done := make(chan struct{})
	go func() { c.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		c.endLife() // a post failing now sees the handover: it hands its batch back
		<-done
	}
	c.endLife()
	c.b.close()
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]HeldBatch, 0, len(c.queue))
	for _, q := range c.queue {
		out = append(out, HeldBatch{Guest: q.guest, Body: q.body})
	}
	clear(c.queue)
	c.queue, c.queued = nil, 0
	c.log.Info("collector sink stopped for a handover", "url", c.url, "handed_batches", len(out),
		"batches_posted", c.stats.Posted, "dropped", c.stats.Dropped, "refused", c.stats.Rejected)
	return out
}

// Adopt queues what a predecessor handed over, for the same collector
// (beyond the queue's size, the oldest are dropped and counted, as ever).
func (c *CollectorSink) Adopt(bs []HeldBatch) {
	for _, b := range bs {
		_ = c.enqueue(b.Body, 0, b.Guest) // its spans were counted by the predecessor
	}
}

// Stats returns a snapshot of the counters.
func (c *CollectorSink) Stats() CollectorStats {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.stats
	s.Queued, s.QueuedBytes, s.InFlight, s.Up = len(c.queue), c.queued, c.busy, !c.down
	return s
}

// URL is the collector's address, as logs name it.
func (c *CollectorSink) URL() string { return c.url }

func (c *CollectorSink) worker() {
	defer c.wg.Done()
	for {
		c.mu.Lock()
		for len(c.queue) == 0 && !c.closed {
			c.work.Wait()
		}
		c.lingerForMore()
		if c.handingOver || len(c.queue) == 0 && c.closed {
			c.mu.Unlock()
			return
		}
		if len(c.queue) == 0 {
			c.mu.Unlock() // another worker took it while this one lingered
			continue
		}
		if c.life.Err() != nil {
			c.dropQueued()
			c.mu.Unlock()
			return
		}
		body, taken := c.take()
		if len(c.queue) > 0 {
			// What this request left (another guest's Jaeger batches)
			// wakes another worker: the wake-up that brought it here may
			// have been meant for them.
			c.work.Signal()
		}
		c.busy++
		c.flying += len(taken)
		c.mu.Unlock()

		result := c.post(body, len(taken))

		c.mu.Lock()
		c.busy--
		c.flying -= len(taken)
		if result == handedBack {
			// Cut short by a handover: first again, for the successor.
			c.queue = append(taken, c.queue...)
			for _, q := range taken {
				c.queued += len(q.body)
			}
		} else {
			for _, q := range taken {
				c.settle(q.guest, result == accepted)
			}
		}
		c.cond.Broadcast()
		c.mu.Unlock()
	}
}

// defaultLinger is how long a worker waits for an OTLP request to fill:
// a Kata agent sends a frame a span, and a request a span would cost the
// endpoint and the host a round trip each; a few milliseconds more of a
// span's way is nothing to a trace.
const defaultLinger = 5 * time.Millisecond

// lingerFill is what the queue holds when a request is full enough to
// go at once.
const lingerFill = maxRequest / 4

// lingerForMore waits, up to c.linger, for the queue to hold a request's
// worth, unless someone waits for the queue (a flush, a stop), the sink
// is closing, or the endpoint is down (its retries hold the workers);
// c.mu is held.
func (c *CollectorSink) lingerForMore() {
	if c.linger <= 0 {
		return
	}
	waited := false
	t := time.AfterFunc(c.linger, func() {
		c.mu.Lock()
		waited = true
		c.work.Broadcast()
		c.mu.Unlock()
	})
	defer t.Stop()
	for !waited && c.queued < lingerFill && c.waiters == 0 && !c.closed && !c.down && len(c.queue) > 0 {
		c.work.Wait()
	}
}

// postResult is how a request ended.
type postResult int

const (
	accepted   postResult = iota
	lost                  // refused, or out of time: dropped and counted
	handedBack            // cut by a handover: queued again
)

// maxRequest bounds a request made of several queued ones: well below
// gRPC's default 4 MiB message limit.
const maxRequest = 1 << 20

// joinScan bounds how far into the queue a Jaeger request looks for its
// guest's batches: a queue of millions costs a take no more than this.
const joinScan = 256

// take removes the next request from the queue, and returns it with the
// batches it is made of; c.mu is held. OTLP
// requests queued together go as one (a Jaeger collector's: takeJaeger): an export request's encoding
// concatenated with another's is the request holding both's spans, and
// one request per span (a Kata agent's frames) would cost the collector
// and the host a round trip each.
func (c *CollectorSink) take() ([]byte, []queued) {
	if _, jaeger := c.b.(jaegerHTTP); jaeger {
		return c.takeJaeger()
	}
	n, size := 1, len(c.queue[0].body)
	for n < len(c.queue) && size+len(c.queue[n].body) <= maxRequest {
		size += len(c.queue[n].body)
		n++
	}
	body := c.queue[0].body
	if n > 1 {
		body = make([]byte, 0, size)
		for _, q := range c.queue[:n] {
			body = append(body, q.body...)
		}
	}
	taken := slices.Clone(c.queue[:n])
	clear(c.queue[:n])
	c.queue = c.queue[n:]
	c.queued -= size
	return body, taken
}

// takeJaeger is take for a Jaeger collector, whose request is one Batch
// of one Process: the first batch queued goes with those of its guest
// after it that have the same Process (byte-equal), in their order, up to
// maxRequest, looking no further than joinScan batches. It stops at the
// guest's first batch that cannot go (another Process, too big), so that
// none overtakes another of its guest's. Other guests' batches stay queued
// where they were.
func (c *CollectorSink) takeJaeger() ([]byte, []queued) {
	first := &c.queue[0]
	picked := []int{0}
	if first.procEnd > 0 {
		proc := first.jaegerBody().Process()
		spans := len(first.jaegerBody().SpanBytes())
		for i := 1; i < min(len(c.queue), joinScan); i++ {
			q := &c.queue[i]
			if q.guest != first.guest {
				continue
			}
			if q.procEnd == 0 || !bytes.Equal(q.jaegerBody().Process(), proc) ||
				jaegerthrift.JoinedSize(len(proc), spans+len(q.jaegerBody().SpanBytes())) > maxRequest {
				break
			}
			spans += len(q.jaegerBody().SpanBytes())
			picked = append(picked, i)
		}
	}
	taken := make([]queued, len(picked))
	for k, i := range picked {
		taken[k] = c.queue[i]
		c.queued -= len(c.queue[i].body)
	}
	body := taken[0].body
	if len(taken) > 1 {
		bodies := make([]jaegerthrift.Body, len(taken))
		for k := range taken {
			bodies[k] = taken[k].jaegerBody()
		}
		body = jaegerthrift.Join(bodies)
	}
	// The batches left before the last one taken move up to close the
	// gaps, from the back: the queue's start moves past what was taken,
	// and its rest is not touched.
	last := picked[len(picked)-1]
	w, k := last, len(picked)-1
	for i := last; i >= 0; i-- {
		if k >= 0 && picked[k] == i {
			k--
			continue
		}
		c.queue[w] = c.queue[i]
		w--
	}
	clear(c.queue[:w+1])
	c.queue = c.queue[w+1:]
	return body, taken
}

// post sends one request of n batches, retrying (see retryPolicy) until
// the collector takes it, refuses it for good (4xx), it has had its time,
// the sink is closed, or a handover cuts it.
func (c *CollectorSink) post(body []byte, n int) postResult {
	r := c.retry.begin(time.Now())
	for attempt := 1; ; attempt++ {
		ctx, cancel := context.WithTimeout(c.life, c.timeout)
		err := c.b.send(ctx, body)
		cancel()
		var rej *rejection
		var part *partialSuccess
		switch {
		case err == nil || errors.As(err, &part):
			c.mu.Lock()
			c.stats.Posted += uint64(n)
			c.stats.LastSuccess = time.Now()
			if part != nil {
				c.stats.RejectedSpans += part.rejected
			}
			total := c.stats.RejectedSpans
			c.reachable()
			c.mu.Unlock()
			if part != nil {
				if ok, skipped := c.partLog.Allow(); ok {
					c.log.Warn("endpoint took a request but rejected some of its spans (OTLP partial success); those are lost", "url", c.url,
						"rejected_spans", part.rejected, "reason", part.reason, "rejected_spans_total", total, "not_logged", skipped)
				}
			}
			return accepted
		case errors.As(err, &rej):
			c.mu.Lock()
			c.stats.Rejected += uint64(n)
			c.reachable() // it answered
			c.mu.Unlock()
			if rej.protocol {
				c.log.Error("endpoint speaks another protocol: batch dropped, not retried", "url", c.url, "err", err)
			} else {
				c.log.Error("collector refused a batch; dropped", "url", c.url, "err", err)
			}
			return lost
		}
		wait, again := r.next(err, time.Now())
		c.mu.Lock()
		if c.handingOver {
			c.mu.Unlock()
			return handedBack
		}
		closed, now := c.closed, c.retryNow
		c.stats.Retries++
		if closed || !again {
			c.stats.Dropped += uint64(n)
		}
		c.unreachable(err)
		c.mu.Unlock()
		switch {
		case closed:
			c.log.Error("collector unreachable at shutdown; batch dropped", "url", c.url, "err", err, "batches", n)
			return lost
		case !again:
			c.log.Error("collector still failing after the retry time; batch dropped", "url", c.url, "err", err,
				"batches", n, "attempts", attempt, "retry_max_elapsed", c.retry.MaxElapsed.String())
			return lost
		}
		c.log.Debug("collector post failed; retrying", "url", c.url, "err", err,
			"attempt", attempt, "retry_in", wait.Round(time.Millisecond).String())
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-now:
			t.Stop()
		case <-c.life.Done():
			t.Stop()
		}
		c.mu.Lock()
		handing := c.handingOver
		c.mu.Unlock()
		if handing {
			return handedBack // not tried again: the successor will
		}
	}
}

// unreachable notes a failed attempt: an outage begins, or goes on (said
// every 30 s); c.mu is held.
func (c *CollectorSink) unreachable(err error) {
	attrs := func() []any {
		return []any{"url", c.url, "err", err, "held_batches", len(c.queue) + c.flying, "held_bytes", c.queued, "retries_total", c.stats.Retries}
	}
	if !c.down {
		c.down, c.downSince = true, time.Now()
		c.cond.Broadcast() // a handover waiting for the collector need not
		c.downLog.Allow()  // the next "still" line is due in a while
		c.log.Warn("collector unreachable: holding batches and retrying", attrs()...)
		return
	}
	if ok, _ := c.downLog.Allow(); ok {
		c.log.Warn("collector still unreachable", append(attrs(), "since", c.downSince.Format(time.RFC3339),
			"for", time.Since(c.downSince).Round(time.Second).String())...)
	}
}

// reachable notes that the collector answered: an outage, if any, ends;
// c.mu is held.
func (c *CollectorSink) reachable() {
	if !c.down {
		return
	}
	c.down = false
	c.log.Info("collector reachable again", "url", c.url, "down_for", time.Since(c.downSince).Round(time.Millisecond).String(),
		"held_batches", len(c.queue)+c.flying, "dropped_total", c.stats.Dropped, "retries_total", c.stats.Retries)
}

// dropQueued drops and counts every batch still queued; c.mu is held.
func (c *CollectorSink) dropQueued() {
	if n := len(c.queue); n > 0 {
		c.stats.Dropped += uint64(n)
		c.log.Error("collector unreachable at shutdown; queued batches dropped", "url", c.url, "batches", n)
	}
	for _, q := range c.queue {
		c.settle(q.guest, false)
	}
	clear(c.queue)
	c.queue, c.queued = c.queue[:0], 0
}

// noTLS is the likely cause of a TLS client's first read being no TLS.
const noTLS = "the endpoint does not speak TLS: give otlp://, otlphttp:// or http:// (in the clear), or the endpoint's TLS port"

// tlsRefused reports whether err says a TLS client was answered in the
// clear (an HTTP/1 server's 400 to the ClientHello, read as a record):
// another protocol, which a retry does not change. gRPC's errors keep
// only the words.
func tlsRefused(err error) bool {
	var rh tls.RecordHeaderError
	msg := err.Error()
	return errors.As(err, &rh) || strings.Contains(msg, "first record does not look like a TLS handshake") ||
		strings.Contains(msg, "server gave HTTP response to HTTPS client") // net/http's words for the same
}
