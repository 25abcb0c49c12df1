package sink

import (
	"errors"
	"fmt"

	"github.com/katatrace/katatrace/guestid"
	"github.com/katatrace/katatrace/jaegerthrift"
	"go.opentelemetry.io/collector/pdata/ptrace"
)

// TraceSink is a Sink that also takes spans in the OpenTelemetry model
// (pdata): the collector and OTLP sinks.
type TraceSink interface {
	Sink
	SendTraces(td ptrace.Traces, from guestid.ID) error
}

// ResourceAdds are the attributes a sink puts on the resource of the
// spans it is given: Set's replace the spans' own of their key (the
// guest's names, which only the host knows), Default's go where the spans
// have none of their key (OTEL_RESOURCE_ATTRIBUTES).
type ResourceAdds struct{ Set, Default []Attr }

// OTLPSink is a Sink that takes spans as OTLP bytes the sender made
// itself: the Kata span decoder encodes OTLP straight from the span, with
// no model between (see kataspan.Span.AppendOTLP).
type OTLPSink interface {
	Sink
	// OTLPResource is what the sink puts on the resource of from's spans,
	// and false when the sink does not send OTLP (a Jaeger collector).
	OTLPResource(from guestid.ID) (ResourceAdds, bool)
	// SendOTLP takes body, resource_spans fields of an OTLP
	// ExportTraceServiceRequest made with OTLPResource's attributes and
	// holding spans spans; the sink keeps body.
	SendOTLP(body []byte, spans int, from guestid.ID) error
}

// SendTraces hands spans in the OpenTelemetry model to s: to a TraceSink
// as they are, to any other (UDP, the printers) as Jaeger emitBatch
// datagrams made by the OpenTelemetry Collector's translator, each within
// a Jaeger agent's UDP limit. The spans' resources name the guest
// (AttrGuest) whatever the sink.
func SendTraces(s Sink, td ptrace.Traces, from guestid.ID) error {
	if ts, ok := s.(TraceSink); ok {
		return ts.SendTraces(td, from)
	}
	return sendJaeger(s, td, from)
}

// sendJaeger sends td as Jaeger datagrams, the guest named on each
// resource (OTLP requests name it as they are made: otlpRequest).
func sendJaeger(s Sink, td ptrace.Traces, from guestid.ID) error {
	rss := td.ResourceSpans()
	for i := range rss.Len() {
		rss.At(i).Resource().Attributes().PutStr(AttrGuest, from.Guest)
	}
	dgs, err := jaegerthrift.FromTraces(td, jaegerthrift.MaxUDPBatch)
	for _, p := range dgs {
		if e := s.Send(p, from); e != nil {
			err = errors.Join(err, e)
		}
	}
	return err
}

// ErrMalformed marks what a sink could not read at all: not a refusal of
// the sink's, but input that breaks the protocol. A host relay that serves
// such input (the Kata span stream) closes the connection it came on.
var ErrMalformed = errors.New("malformed input")

// Malformed wraps err as ErrMalformed.
func Malformed(err error) error { return fmt.Errorf("%w: %w", ErrMalformed, err) }
