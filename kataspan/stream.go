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
			// Encoded before Send returns: the span may borrow p's bytes.
			span, err := decodeBorrowed(p)
			if err != nil {
				return sink.Malformed(err)
			}
			return s.sendOTLP(o, span, adds, from)
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

// scratch holds OTLP encodings being made: the queue then holds each in
// a copy of its own size.
var scratch = sync.Pool{New: func() any { return new([]byte) }}

func (s *Sink) sendOTLP(o sink.OTLPSink, span *Span, adds sink.ResourceAdds, from guestid.ID) error {
	bp := scratch.Get().(*[]byte)
	defer scratch.Put(bp)
	b, err := span.AppendOTLP((*bp)[:0], s.service, from.Sandbox, adds)
	if err != nil {
		return sink.Malformed(err)
	}
	if cap(b) <= maxScratch {
		*bp = b
	}
	return o.SendOTLP(slices.Clone(b), 1, from)
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
