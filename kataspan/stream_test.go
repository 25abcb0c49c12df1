package kataspan

import (
	"bytes"
	"context"
	"testing"

	"github.com/katatrace/katatrace/guestid"
	"go.opentelemetry.io/collector/pdata/ptrace"
)

// traceRecorder is a sink.TraceSink that keeps what it is sent.
type traceRecorder struct{ got []ptrace.Traces }

func (r *traceRecorder) Send([]byte, guestid.ID) error { return nil }
func (r *traceRecorder) SendTraces(td ptrace.Traces, _ guestid.ID) error {
	r.got = append(r.got, td)
	return nil
}
func (r *traceRecorder) Flush(context.Context) error { return nil }
func (r *traceRecorder) Close(context.Context) error { return nil }

// TestSinkNamesTheSandbox: a span from a guest whose sandbox the host
// knows carries its ID on its resource under Kata's runtime's key; one
// from a guest the host cannot name carries none; a sandbox_id the agent
// set itself is kept.
func TestSinkNamesTheSandbox(t *testing.T) {
	json := capture(t, "json-otel017-api")[0]
	own := bytes.Replace(json, []byte(`"resource":{"attrs":{`), []byte(`"resource":{"attrs":{"sandbox_id":{"String":"agents-own"},`), 1)
	if bytes.Equal(own, json) {
		t.Fatal("the capture's resource is not where the test looks for it")
	}
	named := guestid.Named("unix:///run/vc/vm/sb1/clh.sock_10240")
	named.Sandbox = "sb1"
	tests := []struct {
		name    string
		payload []byte
		from    guestid.ID
		want    string // "" for none
	}{
		{"json, sandbox known", json, named, "sb1"},
		{"bincode, sandbox known", capture(t, "bincode-otel014-tracing")[0], named, "sb1"},
		{"sandbox unknown", json, guestid.Named("vsock:vm(3)"), ""},
		{"the agent's own", own, named, "agents-own"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var rec traceRecorder
			if err := NewSink(&rec, "kata-agent").Send(tt.payload, tt.from); err != nil {
				t.Fatal(err)
			}
			if len(rec.got) != 1 || rec.got[0].ResourceSpans().Len() != 1 {
				t.Fatalf("sent %d", len(rec.got))
			}
			got := ""
			v, ok := rec.got[0].ResourceSpans().At(0).Resource().Attributes().Get(SandboxKey)
			if ok {
				got = v.AsString()
			}
			if ok != (tt.want != "") || got != tt.want {
				t.Fatalf("sandbox_id %q (set %v), want %q", got, ok, tt.want)
			}
		})
	}
}
