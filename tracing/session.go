package tracing

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/opentracing/opentracing-go"
	"github.com/uber/jaeger-client-go"
)

// Session is one trace of the agent shim: a jaeger-client-go tracer whose
// batches go to a Transport, and the root span kata-agent that the shim's
// and the agent's spans descend from. NoSession's spans are no-ops, for an
// untraced agent.
type Session struct {
	tracer   opentracing.Tracer
	closer   io.Closer
	root     opentracing.Span
	log      *slog.Logger
	onFinish func()
	reporter *syncReporter
}

// OnFinish sets what Finish does before it flushes the tracer (release a
// held Transport).
func (t *Session) OnFinish(fn func()) { t.onFinish = fn }

// Flush sends at once what the transport holds (after a Release), not
// at the next span.
func (t *Session) Flush() {
	if t.reporter != nil {
		t.reporter.flush()
	}
}

// TraceID is the session's trace, zero for NoSession.
func (t *Session) TraceID() jaeger.TraceID {
	if sc, ok := t.root.Context().(jaeger.SpanContext); ok {
		return sc.TraceID()
	}
	return jaeger.TraceID{}
}

// syncReporter hands each finished span to the transport at once, on the
// goroutine that finished it, one batch each: the shim's spans are few
// (five, and one per proxied call), and a jaeger-client-go RemoteReporter
// would keep a queue for them (100,000 places: 2.4 MB of a guest's heap)
// and a goroutine. Nothing is dropped: the transport hands each batch to
// the relay's queue, which counts what it must drop.
type syncReporter struct {
	mu  sync.Mutex
	t   jaeger.Transport
	log *slog.Logger
}

func (r *syncReporter) Report(s *jaeger.Span) {
	r.mu.Lock()
	defer r.mu.Unlock()
	_, err := r.t.Append(s)
	if err == nil {
		_, err = r.t.Flush()
	}
	if err != nil && r.log != nil {
		r.log.Warn("span not sent", "operation", s.OperationName(), "err", err)
	}
}

// flush sends what the transport keeps (spans held until a release).
func (r *syncReporter) flush() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, err := r.t.Flush(); err != nil && r.log != nil {
		r.log.Warn("spans not sent", "err", err)
	}
}

func (r *syncReporter) Close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.t.Close(); err != nil && r.log != nil {
		r.log.Warn("tracer transport not closed cleanly", "err", err)
	}
}

// NoSession makes no-op spans: nothing is traced.
func NoSession() *Session {
	return &Session{tracer: opentracing.NoopTracer{}, root: opentracing.NoopTracer{}.StartSpan("")}
}

// NewSession starts a tracer named service whose batches go to transport,
// and opens the root span kata-agent, tagged with the tracing mode and
// type; a valid parent (agent.trace_parent) makes it the runtime's child.
func NewSession(service string, transport jaeger.Transport, mode, typ string, parent jaeger.SpanContext, log *slog.Logger) *Session {
	rep := &syncReporter{t: transport, log: log}
	tracer, closer := jaeger.NewTracer(service, jaeger.NewConstSampler(true), rep,
		jaeger.TracerOptions.MaxTagValueLength(4096))
	opts := []opentracing.StartSpanOption{
		opentracing.Tag{Key: "source", Value: "agent"},
		opentracing.Tag{Key: "root-span", Value: true},
		opentracing.Tag{Key: "trace-mode", Value: mode},
		opentracing.Tag{Key: "trace-type", Value: typ},
	}
	if parent.IsValid() {
		opts = append(opts, opentracing.ChildOf(parent))
	}
	return &Session{tracer: tracer, closer: closer, root: tracer.StartSpan("kata-agent", opts...), log: log, reporter: rep}
}

// Tracer is the session's tracer, and its root span's context.
func (t *Session) Tracer() (opentracing.Tracer, opentracing.SpanContext) {
	return t.tracer, t.root.Context()
}

// Child starts a span under the root.
func (t *Session) Child(op string, opts ...opentracing.StartSpanOption) opentracing.Span {
	return t.tracer.StartSpan(op, append(opts, opentracing.ChildOf(t.root.Context()))...)
}

// Boot adds the span from the kernel's start to the shim's, read off
// /proc/uptime.
func (t *Session) Boot(shimStart time.Time) {
	b, err := os.ReadFile("/proc/uptime")
	if err != nil {
		return
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return
	}
	secs, err := strconv.ParseFloat(f[0], 64)
	if err != nil {
		return
	}
	kernelStart := time.Now().Add(-time.Duration(secs * float64(time.Second)))
	s := t.Child("boot", opentracing.StartTime(kernelStart))
	s.SetTag("uptime-at-shim-start-ms", shimStart.Sub(kernelStart).Milliseconds())
	s.FinishWithOptions(opentracing.FinishOptions{FinishTime: shimStart})
}

// Env is what the agent's own tracer needs: where to send
// (JAEGER_AGENT_HOST and _PORT) and the root span's context, in Jaeger's
// form (UBER_TRACE_ID) and W3C's (TRACEPARENT), for a traced session.
func (t *Session) Env(host, port string) []string {
	env := []string{"JAEGER_AGENT_HOST=" + host, "JAEGER_AGENT_PORT=" + port}
	sc, ok := t.root.Context().(jaeger.SpanContext)
	if !ok {
		return env
	}
	sampled := 0
	if sc.IsSampled() {
		sampled = 1
	}
	return append(env, "UBER_TRACE_ID="+sc.String(),
		fmt.Sprintf("TRACEPARENT=00-%016x%016x-%016x-%02x", sc.TraceID().High, sc.TraceID().Low, uint64(sc.SpanID()), sampled))
}

// Finish tags and ends the root span and flushes the tracer into its
// transport.
func (t *Session) Finish(tags map[string]any) {
	for k, v := range tags {
		t.root.SetTag(k, v)
	}
	t.root.Finish()
	if t.onFinish != nil {
		t.onFinish()
	}
	if t.closer != nil {
		if err := t.closer.Close(); err != nil {
			t.log.Warn("tracer flush", "err", err)
		}
	}
}
