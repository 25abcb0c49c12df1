package jaegerthrift

import (
	"strings"
	"testing"

	"github.com/katatrace/katatrace/internal/jaegertest"
	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"
)

// FuzzToTraces: whatever the bytes, the translation returns traces or an
// error naming what failed, and what it returns survives an OTLP round
// trip.
func FuzzToTraces(f *testing.F) {
	for _, tt := range scanTests {
		f.Add(tt.in)
	}
	for _, p := range jaegertest.Capture(f, "svc", jaegertest.SmallTrace) {
		f.Add(p)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		td, err := ToTraces(in)
		if err != nil {
			if !strings.Contains(err.Error(), "emitBatch") && !strings.Contains(err.Error(), "OpenTelemetry") {
				t.Fatalf("error names neither the input nor the translation: %v", err)
			}
			return
		}
		body, err := ptraceotlp.NewExportRequestFromTraces(td).MarshalProto()
		if err != nil {
			t.Fatal(err)
		}
		req := ptraceotlp.NewExportRequest()
		if err := req.UnmarshalProto(body); err != nil || req.Traces().SpanCount() != td.SpanCount() {
			t.Fatalf("round trip: %v, %d spans of %d", err, req.Traces().SpanCount(), td.SpanCount())
		}
	})
}
