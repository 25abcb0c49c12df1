package jaegerthrift

import (
	"context"
	"fmt"

	athrift "github.com/apache/thrift/lib/go/thrift"
	idlagent "github.com/jaegertracing/jaeger-idl/thrift-gen/agent"
	jaegertranslator "github.com/open-telemetry/opentelemetry-collector-contrib/pkg/translator/jaeger"
	"go.opentelemetry.io/collector/pdata/ptrace"
)

// ToTraces turns one Jaeger client datagram (a Thrift compact emitBatch
// message) into the OpenTelemetry model, by the OpenTelemetry Collector's
// own Jaeger translator.
func ToTraces(p []byte) (ptrace.Traces, error) {
	if _, err := ScanEmitBatch(p); err != nil { // bounds what the decoder allocates
		return ptrace.Traces{}, fmt.Errorf("decode emitBatch: %w", err)
	}
	buf := athrift.NewTMemoryBufferLen(len(p))
	_, _ = buf.Write(p)
	proto := athrift.NewTCompactProtocolConf(buf, &athrift.TConfiguration{MaxMessageSize: 1 << 20, MaxFrameSize: 1 << 20})
	ctx := context.Background()
	if _, _, _, err := proto.ReadMessageBegin(ctx); err != nil {
		return ptrace.Traces{}, fmt.Errorf("decode emitBatch: %w", err)
	}
	args := idlagent.NewAgentEmitBatchArgs()
	if err := args.Read(ctx, proto); err != nil {
		return ptrace.Traces{}, fmt.Errorf("decode emitBatch: %w", err)
	}
	if args.Batch == nil || args.Batch.Process == nil {
		return ptrace.Traces{}, fmt.Errorf("decode emitBatch: no batch or process in the message")
	}
	td, err := jaegertranslator.ThriftToTraces(args.Batch)
	if err != nil {
		return ptrace.Traces{}, fmt.Errorf("translate to OpenTelemetry: %w", err)
	}
	return td, nil
}
