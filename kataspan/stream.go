package kataspan

import (
	"context"
	"slices"
	"sync"

	"github.com/katatrace/katatrace/guestid"
	"github.com/katatrace/katatrace/sink"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"
)

// Port is the vsock port Kata agents send their spans to.
const Port = 10240

// HeaderSize is a frame's header: the payload's length, a big-endian u64.
const HeaderSize = 8

// DefaultMaxSpan bounds one span's payload unless told otherwise: far
// above what an agent's span takes (a few KiB), far below what a guest
// could make the host hold.
const DefaultMaxSpan = 4 << 20

// Sink decodes each payload a host relay hands it and sends the span on to
// out, in the OpenTelemetry model (see sink.SendTraces). A payload that
// does not decode is sink.ErrMalformed: the relay skips it, counted, and
// reads the agent's next frame.
type Sink struct {
	out     sink.Sink
	service string
}

// NewSink sends to out; service names spans whose resource has no
// service name (Kata's --trace-name).
func NewSink(out sink.Sink, service string) *Sink { return &Sink{out: out, service: service} }

// Send decodes p, one span, and sends it on: to an OTLP endpoint as OTLP
// bytes made straight from the span, to any other sink through the model.
func (s *Sink) Send(p []byte, from guestid.ID) error {
	if o, ok := s.out.(sink.OTLPSink); ok {
		if adds, ok := o.OTLPResource(from); ok {
			return s.sendOTLP(o, p, adds, from)
		}
	}
	span, err := Decode(p)
	if err != nil {
		return sink.Malformed(err)
	}
	td, err := span.Traces(s.service)
	if err != nil {
		return sink.Malformed(err)
	}
	if from.Sandbox != "" {
		putSandbox(td, from.Sandbox)
	}
	return sink.SendTraces(s.out, td, from)
}

// transient is what a span takes on its way to OTLP, reused from one to
// the next: the span (its lists' arrays) and the buffer its encoding is
// made in (the queue then holds a copy of its own size).
type transient struct {
	span Span
	buf  []byte
}

var transients = sync.Pool{New: func() any { return new(transient) }}

// sendOTLP decodes p into a transient span, borrowing p's bytes (it is
// encoded before Send returns), and hands its OTLP encoding to o.
func (s *Sink) sendOTLP(o sink.OTLPSink, p []byte, adds sink.ResourceAdds, from guestid.ID) error {
	body, err := toOTLP(p, s.service, from.Sandbox, adds)
	if err != nil {
		return sink.Malformed(err)
	}
	return o.SendOTLP(body, 1, from)
}

// toOTLP is the span p holds as OTLP bytes (Span.AppendOTLP), in a slice
// of its own.
func toOTLP(p []byte, service, sandbox string, adds sink.ResourceAdds) ([]byte, error) {
	t := transients.Get().(*transient)
	defer transients.Put(t)
	if err := decodeInto(&t.span, p, true); err != nil {
		t.span = Span{}
		return nil, err
	}
	b, err := t.span.AppendOTLP(t.buf[:0], service, sandbox, adds)
	t.forget()
	if err != nil {
		return nil, err
	}
	if cap(b) <= maxScratch {
		t.buf = b
	}
	return slices.Clone(b), nil
}

// forget drops what the span holds of the payload it borrowed, keeping
// its arrays (a huge span's are let go).
func (t *transient) forget() {
	s := &t.span
	held := cap(s.Attributes) + cap(s.Resource) + cap(s.Events) + cap(s.Links)
	for _, e := range s.Events[:cap(s.Events)] {
		held += cap(e.Attributes)
	}
	for _, l := range s.Links[:cap(s.Links)] {
		held += cap(l.Attributes)
	}
	if held > 1024 {
		*s = Span{}
		return
	}
	clear(s.Attributes[:cap(s.Attributes)])
	clear(s.Resource[:cap(s.Resource)])
	events, links := s.Events[:cap(s.Events)], s.Links[:cap(s.Links)]
	for i := range events {
		e := &events[i]
		clear(e.Attributes[:cap(e.Attributes)])
		*e = Event{Attributes: e.Attributes[:0]}
	}
	for i := range links {
		l := &links[i]
		clear(l.Attributes[:cap(l.Attributes)])
		*l = Link{Attributes: l.Attributes[:0]}
	}
	s.reset()
}

// maxScratch bounds a buffer kept for the next span: a huge one is not
// held on to.
const maxScratch = 64 << 10

// SandboxKey is the resource attribute naming the VM's sandbox: the key
// Kata's runtime tags its own spans with (katautils, virtcontainers), so
// that one search finds the runtime's half of a sandbox and the agent's.
const SandboxKey = "sandbox_id"

// putSandbox names the sandbox on every resource of td that does not
// name one already (the agent's own word wins).
func putSandbox(td ptrace.Traces, id string) {
	rss := td.ResourceSpans()
	for i := range rss.Len() {
		if res := rss.At(i).Resource().Attributes(); !hasKey(res, SandboxKey) {
			res.PutStr(SandboxKey, id)
		}
	}
}

func hasKey(m pcommon.Map, k string) bool { _, ok := m.Get(k); return ok }

// Flush flushes out.
func (s *Sink) Flush(ctx context.Context) error { return s.out.Flush(ctx) }

// Close closes out.
func (s *Sink) Close(ctx context.Context) error { return s.out.Close(ctx) }

// Unwrap is the sink spans go to (for its own counters).
func (s *Sink) Unwrap() sink.Sink { return s.out }
