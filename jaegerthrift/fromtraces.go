package jaegerthrift

import (
	"context"
	"fmt"

	athrift "github.com/apache/thrift/lib/go/thrift"
	"github.com/jaegertracing/jaeger-idl/model/v1"
	idlagent "github.com/jaegertracing/jaeger-idl/thrift-gen/agent"
	idljaeger "github.com/jaegertracing/jaeger-idl/thrift-gen/jaeger"
	jaegertranslator "github.com/open-telemetry/opentelemetry-collector-contrib/pkg/translator/jaeger"
	jaegerthriftconv "github.com/open-telemetry/opentelemetry-collector-contrib/pkg/translator/jaeger/jaegerthriftcoverter"
	"go.opentelemetry.io/collector/pdata/ptrace"
)

// MaxUDPBatch is the largest emitBatch a Jaeger agent takes over UDP.
const MaxUDPBatch = 65000

// FromTraces turns spans in the OpenTelemetry model into Jaeger client
// datagrams (Thrift compact emitBatch messages, as jaeger-client-go sends
// them), through the OpenTelemetry Collector's own translator: one per
// resource, split by spans where one would pass max bytes. A span that
// alone passes max is an error (it could not be sent), after the others.
func FromTraces(td ptrace.Traces, max int) ([][]byte, error) {
	var out [][]byte
	var tooBig int
	for _, b := range jaegertranslator.ProtoFromTraces(td) {
		process := &idljaeger.Process{}
		if b.Process != nil {
			process.ServiceName = b.Process.ServiceName
			process.Tags = jaegerthriftconv.FromDomainSpan(&model.Span{Tags: b.Process.Tags}).Tags
		}
		spans := jaegerthriftconv.FromDomain(b.Spans)
		var err error
		if out, tooBig, err = appendBatches(out, process, spans, max, tooBig); err != nil {
			return out, err
		}
	}
	if tooBig > 0 {
		return out, fmt.Errorf("%d spans each larger than a Jaeger datagram (%d bytes) were not sent", tooBig, max)
	}
	return out, nil
}

// appendBatches appends spans as emitBatch messages of at most max bytes,
// halving what does not fit.
func appendBatches(out [][]byte, process *idljaeger.Process, spans []*idljaeger.Span, max, tooBig int) ([][]byte, int, error) {
	if len(spans) == 0 {
		return out, tooBig, nil
	}
	p, err := encodeEmitBatch(&idljaeger.Batch{Process: process, Spans: spans})
	if err != nil {
		return out, tooBig, err
	}
	switch {
	case len(p) <= max:
		return append(out, p), tooBig, nil
	case len(spans) == 1:
		return out, tooBig + 1, nil
	}
	half := len(spans) / 2
	if out, tooBig, err = appendBatches(out, process, spans[:half], max, tooBig); err != nil {
		return out, tooBig, err
	}
	return appendBatches(out, process, spans[half:], max, tooBig)
}

// encodeEmitBatch writes a one-way emitBatch call in Thrift compact.
func encodeEmitBatch(b *idljaeger.Batch) ([]byte, error) {
	buf := athrift.NewTMemoryBuffer()
	proto := athrift.NewTCompactProtocolConf(buf, &athrift.TConfiguration{})
	ctx := context.Background()
	args := idlagent.NewAgentEmitBatchArgs()
	args.Batch = b
	if err := proto.WriteMessageBegin(ctx, "emitBatch", athrift.ONEWAY, 1); err != nil {
		return nil, err
	}
	if err := args.Write(ctx, proto); err != nil {
		return nil, fmt.Errorf("encode emitBatch: %w", err)
	}
	if err := proto.WriteMessageEnd(ctx); err != nil {
		return nil, err
	}
	if err := proto.Flush(ctx); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
