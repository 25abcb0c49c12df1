package e2e

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/katatrace/katatrace/internal/katatest"
	"github.com/katatrace/katatrace/internal/testutil"
)

// TestForwarderOTELEnvironmentIntoJaeger: a real Jaeger v2 takes the
// forwarder's gzip requests, over OTLP/gRPC and OTLP/HTTP, where
// OpenTelemetry's variables alone say where and how; the service name
// and resource attributes come from them too, the guest's name stays
// katatrace's.
func TestForwarderOTELEnvironmentIntoJaeger(t *testing.T) {
	bin, _ := binaries(t)
	j := startJaeger(t)
	dir := testutil.SockDir(t)
	for _, tt := range []struct {
		name, capture, trace string
		env                  []string
	}{
		{"grpc", "json-otel017-api", "d5549796b885246c67389f3b2fa247d1",
			[]string{fmt.Sprintf("OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:%d", j.OTLPGRPC)}},
		{"http", "bincode-otel014-api", "a650f4bb0f1338066ba882140dded800",
			[]string{fmt.Sprintf("OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:%d", j.OTLPHTTP), "OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			hv := filepath.Join(dir, tt.name+".hvsock")
			env := append(tt.env, "OTEL_EXPORTER_OTLP_COMPRESSION=gzip", "OTEL_SERVICE_NAME=agent-"+tt.name,
				"OTEL_RESOURCE_ATTRIBUTES=deployment.environment=e2e,katatrace.guest=spoofed")
			p := testutil.Start(t, env, bin, "kata-trace-forwarder", "--socket-path", hv)
			p.WaitLog("msg=ready")
			katatest.Send(t, hv+"_10240", katatest.Capture(t, tt.capture))
			stopForwarder(t, p, 1)
			spans := j.WaitTrace(t, tt.trace, 6, 20*time.Second)
			checkKataTree(t, spans, "agent-"+tt.name, true) // the guest named by katatrace, not spoofed
			for _, s := range spans {
				if s.Process.Tag("deployment.environment") != "e2e" {
					t.Fatalf("%s: process tags %v", s.OperationName, s.Process.Tags)
				}
			}
		})
	}
}

// TestForwarderWrongProtocolAtJaeger: the forwarder speaking OTLP/gRPC to
// Jaeger's OTLP/HTTP port, or OTLP/HTTP to its gRPC port, says so with
// the scheme to give, and drops the batch as refused: no outage is
// declared, nothing is retried.
func TestForwarderWrongProtocolAtJaeger(t *testing.T) {
	bin, _ := binaries(t)
	j := startJaeger(t)
	dir := testutil.SockDir(t)
	for _, tt := range []struct{ name, to, want string }{
		{"grpc at http", fmt.Sprintf("otlp://127.0.0.1:%d", j.OTLPHTTP), "give otlphttp://"},
		{"http at grpc", fmt.Sprintf("otlphttp://127.0.0.1:%d", j.OTLPGRPC), "give otlp://"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			hv := filepath.Join(dir, "wrong.hvsock")
			p := testutil.Start(t, nil, bin, "kata-trace-forwarder", "--socket-path", hv, "--to", tt.to)
			p.WaitLog("msg=ready")
			katatest.Send(t, hv+"_10240", katatest.Capture(t, "json-otel017-api"))
			p.WaitLog("endpoint speaks another protocol")
			stopForwarder(t, p, 1)
			if errs := p.Stderr.String(); !strings.Contains(errs, tt.want) || strings.Contains(errs, "collector unreachable") || !strings.Contains(errs, "retries=0") {
				t.Fatalf("want the cause said, no outage, no retry:\n%s", errs)
			}
		})
	}
}
