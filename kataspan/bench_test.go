package kataspan

import (
	"context"
	"io"
	"log/slog"
	"net"
	"testing"

	"github.com/katatrace/katatrace/guestid"
	"github.com/katatrace/katatrace/sink"
	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"
	"google.golang.org/grpc"
)

type discard struct {
	ptraceotlp.UnimplementedGRPCServer
}

func (*discard) Export(context.Context, ptraceotlp.ExportRequest) (ptraceotlp.ExportResponse, error) {
	return ptraceotlp.NewExportResponse(), nil
}

// BenchmarkSinkToOTLP: what the forwarder does per frame of a Kata
// agent's, but reading it: decoded, encoded, queued and sent to an
// OTLP/gRPC endpoint (in this process: its decoding is counted too).
func BenchmarkSinkToOTLP(b *testing.B) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	gs := grpc.NewServer()
	ptraceotlp.RegisterGRPCServer(gs, &discard{})
	go func() { _ = gs.Serve(ln) }()
	defer gs.Stop()
	out, err := sink.NewOTLPSink(sink.OTLPConfig{GRPC: true, Endpoint: ln.Addr().String()}, 1<<30, 2, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		b.Fatal(err)
	}
	s := NewSink(out, "kata-agent")
	from := guestid.Named("unix:///run/vc/vm/sb1/clh.sock_10240")
	for _, name := range []string{"json-otel017-api", "bincode-otel014-api"} {
		ps := capture(b, name)
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				if err := s.Send(ps[i%len(ps)], from); err != nil {
					b.Fatal(err)
				}
				i++
			}
			if err := s.Flush(context.Background()); err != nil {
				b.Fatal(err)
			}
		})
	}
	_ = s.Close(context.Background())
}
