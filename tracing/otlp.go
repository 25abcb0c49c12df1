package tracing

import (
	"context"
	"fmt"
	"strings"

	athrift "github.com/apache/thrift/lib/go/thrift"
	idlagent "github.com/jaegertracing/jaeger-idl/thrift-gen/agent"
	jaegertranslator "github.com/open-telemetry/opentelemetry-collector-contrib/pkg/translator/jaeger"
	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"
)

// Resource attributes katatrace adds to a guest's spans: which VM sent
// them (a vsock CID, or the hybrid-vsock socket), and over which
// connection.
const (
	AttrGuest     = "katatrace.guest"
	AttrGuestPeer = "katatrace.guest.peer"
)

// EmitBatchToOTLP turns one Jaeger client datagram (a Thrift compact
// emitBatch message) into an OTLP export request, by the OpenTelemetry
// Collector's own Jaeger translator, with the guest named on its resource.
// It returns the request's protobuf encoding and its number of spans.
func EmitBatchToOTLP(p []byte, peer string) ([]byte, int, error) {
	if _, err := ScanEmitBatch(p); err != nil { // bounds what the decoder allocates
		return nil, 0, fmt.Errorf("decode emitBatch: %w", err)
	}
	buf := athrift.NewTMemoryBufferLen(len(p))
	_, _ = buf.Write(p)
	proto := athrift.NewTCompactProtocolConf(buf, &athrift.TConfiguration{MaxMessageSize: 1 << 20, MaxFrameSize: 1 << 20})
	ctx := context.Background()
	if _, _, _, err := proto.ReadMessageBegin(ctx); err != nil {
		return nil, 0, fmt.Errorf("decode emitBatch: %w", err)
	}
	args := idlagent.NewAgentEmitBatchArgs()
	if err := args.Read(ctx, proto); err != nil {
		return nil, 0, fmt.Errorf("decode emitBatch: %w", err)
	}
	if args.Batch == nil || args.Batch.Process == nil {
		return nil, 0, fmt.Errorf("decode emitBatch: no batch or process in the message")
	}
	td, err := jaegertranslator.ThriftToTraces(args.Batch)
	if err != nil {
		return nil, 0, fmt.Errorf("translate to OpenTelemetry: %w", err)
	}
	guest := GuestOf(peer)
	rss := td.ResourceSpans()
	for i := range rss.Len() {
		attrs := rss.At(i).Resource().Attributes()
		attrs.PutStr(AttrGuest, guest)
		attrs.PutStr(AttrGuestPeer, peer)
	}
	body, err := ptraceotlp.NewExportRequestFromTraces(td).MarshalProto()
	if err != nil {
		return nil, 0, fmt.Errorf("encode OTLP: %w", err)
	}
	return body, td.SpanCount(), nil
}

// GuestOf is the VM in a host relay's peer name: the vsock CID
// ("vsock:vm(3)") or the hybrid-vsock socket ("unix:///run/…_6831"),
// without the connection's port or number.
func GuestOf(peer string) string {
	if i := strings.LastIndexByte(peer, '#'); i > 0 && strings.HasPrefix(peer, "unix:") {
		return peer[:i]
	}
	if strings.HasPrefix(peer, "vsock:") {
		if i := strings.LastIndexByte(peer, ':'); i > len("vsock:") {
			return peer[:i]
		}
	}
	return peer
}

// traces decodes an export request again (the gRPC client takes it whole).
func traces(body []byte) (ptraceotlp.ExportRequest, error) {
	req := ptraceotlp.NewExportRequest()
	return req, req.UnmarshalProto(body)
}
