package jaegerthrift

import (
	"strings"
	"testing"

	"go.opentelemetry.io/collector/pdata/ptrace"
)

// TestFromTracesRoundTrip: spans in the OpenTelemetry model become Jaeger
// datagrams that the scanner and decoder take, with tree, tags and logs,
// split to fit a UDP datagram.
func TestFromTracesRoundTrip(t *testing.T) {
	td := ptrace.NewTraces()
	rs := td.ResourceSpans().AppendEmpty()
	rs.Resource().Attributes().PutStr("service.name", "kata-agent")
	rs.Resource().Attributes().PutStr("katatrace.guest", "vsock:vm(3)")
	spans := rs.ScopeSpans().AppendEmpty().Spans()
	tid := [16]byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}
	for i := range 40 {
		sp := spans.AppendEmpty()
		sp.SetTraceID(tid)
		sp.SetSpanID([8]byte{0, 0, 0, 0, 0, 0, 1, byte(i + 1)})
		if i > 0 {
			sp.SetParentSpanID([8]byte{0, 0, 0, 0, 0, 0, 1, 1})
		}
		sp.SetName("op")
		sp.SetStartTimestamp(1_796_224_249_000_000_000)
		sp.SetEndTimestamp(1_796_224_249_001_000_000)
		sp.Attributes().PutStr("payload", strings.Repeat("x", 3000))
		sp.Attributes().PutInt("i", int64(i))
		ev := sp.Events().AppendEmpty()
		ev.SetName("event")
		ev.Attributes().PutBool("ok", true)
	}
	dgs, err := FromTraces(td, MaxUDPBatch)
	if err != nil {
		t.Fatal(err)
	}
	if len(dgs) < 2 {
		t.Fatalf("%d datagrams for 120 KB of spans: not split", len(dgs))
	}
	n := 0
	for _, p := range dgs {
		if len(p) > MaxUDPBatch {
			t.Fatalf("datagram of %d bytes", len(p))
		}
		if m, err := ScanEmitBatch(p); err != nil || m != len(p) {
			t.Fatalf("scan: %d of %d, %v", m, len(p), err)
		}
		b, err := DecodeEmitBatch(p)
		if err != nil {
			t.Fatal(err)
		}
		if b.Process.ServiceName != "kata-agent" {
			t.Fatalf("service %q", b.Process.ServiceName)
		}
		for _, s := range b.Spans {
			n++
			if TraceID(s) != "0102030405060708090a0b0c0d0e0f10" || len(s.Logs) != 1 {
				t.Fatalf("span %s: trace %s, %d logs", SpanID(s.SpanId), TraceID(s), len(s.Logs))
			}
			if s.SpanId != 0x101 && ParentID(s) != 0x101 {
				t.Fatalf("span %x: parent %x", s.SpanId, ParentID(s))
			}
		}
	}
	if n != 40 {
		t.Fatalf("%d spans of 40", n)
	}
	// A span that cannot fit is reported, the rest still sent.
	big := spans.AppendEmpty()
	big.SetTraceID(tid)
	big.SetSpanID([8]byte{9})
	big.Attributes().PutStr("payload", strings.Repeat("y", 70000))
	dgs, err = FromTraces(td, MaxUDPBatch)
	if err == nil || !strings.Contains(err.Error(), "1 spans each larger") || len(dgs) < 2 {
		t.Fatalf("%d datagrams, %v", len(dgs), err)
	}
}
