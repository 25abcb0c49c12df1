package jaegerthrift

import (
	"context"
	"fmt"
	"strconv"

	"github.com/uber/jaeger-client-go/thrift"
	"github.com/uber/jaeger-client-go/thrift-gen/agent"
	"github.com/uber/jaeger-client-go/thrift-gen/jaeger"
)

// DecodeEmitBatch decodes one Jaeger client datagram: a Thrift compact
// emitBatch message.
func DecodeEmitBatch(p []byte) (*jaeger.Batch, error) {
	// Walk it first: the decoder allocates the lists a message declares, so
	// only a message whose structure was checked within its bytes gets there.
	if _, err := ScanEmitBatch(p); err != nil {
		return nil, fmt.Errorf("decode emitBatch: %w", err)
	}
	buf := thrift.NewTMemoryBufferLen(len(p))
	_, _ = buf.Write(p)
	proto := thrift.NewTCompactProtocolConf(buf, &thrift.TConfiguration{MaxMessageSize: 1 << 20, MaxFrameSize: 1 << 20})
	ctx := context.Background()
	if _, _, _, err := proto.ReadMessageBegin(ctx); err != nil {
		return nil, fmt.Errorf("decode emitBatch: %w", err)
	}
	args := agent.NewAgentEmitBatchArgs()
	if err := args.Read(ctx, proto); err != nil {
		return nil, fmt.Errorf("decode emitBatch: %w", err)
	}
	if args.Batch == nil || args.Batch.Process == nil {
		return nil, fmt.Errorf("decode emitBatch: no batch or process in the message")
	}
	return args.Batch, nil
}

// EncodeBatchBinary encodes a batch as the Jaeger collector's HTTP endpoint
// takes it: Thrift binary.
func EncodeBatchBinary(b *jaeger.Batch) ([]byte, error) {
	return thrift.NewTSerializer().Write(context.Background(), b)
}

// TraceID formats a span's trace id as Jaeger does: 16 hex digits, or 32
// when the high half is used.
func TraceID(s *jaeger.Span) string {
	if s.TraceIdHigh != 0 {
		return fmt.Sprintf("%016x%016x", uint64(s.TraceIdHigh), uint64(s.TraceIdLow))
	}
	return fmt.Sprintf("%016x", uint64(s.TraceIdLow))
}

// SpanID formats a span id (or parent id) as 16 hex digits.
func SpanID(id int64) string { return fmt.Sprintf("%016x", uint64(id)) }

// ParentID returns the span's parent: ParentSpanId, or the first CHILD_OF
// reference for clients that only send references.
func ParentID(s *jaeger.Span) int64 {
	if s.ParentSpanId != 0 {
		return s.ParentSpanId
	}
	for _, r := range s.References {
		if r != nil && r.RefType == jaeger.SpanRefType_CHILD_OF {
			return r.SpanId
		}
	}
	return 0
}

// TagValue returns a tag's value as Go value (string, float64, bool, int64
// or []byte).
func TagValue(t *jaeger.Tag) any {
	switch t.VType {
	case jaeger.TagType_STRING:
		return t.GetVStr()
	case jaeger.TagType_DOUBLE:
		return t.GetVDouble()
	case jaeger.TagType_BOOL:
		return t.GetVBool()
	case jaeger.TagType_LONG:
		return t.GetVLong()
	case jaeger.TagType_BINARY:
		return t.GetVBinary()
	}
	return nil
}

// TagString formats a tag's value for people.
func TagString(t *jaeger.Tag) string {
	switch v := TagValue(t).(type) {
	case string:
		return strconv.Quote(v)
	case []byte:
		return fmt.Sprintf("0x%x", v)
	default:
		return fmt.Sprint(v)
	}
}
