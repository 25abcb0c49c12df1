package roles_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/katatrace/katatrace/internal/katatest"
	"github.com/katatrace/katatrace/internal/otlptest"
	"github.com/katatrace/katatrace/internal/testutil"
)

// TestDestinationsCannotBeMisread: an address whose protocol is plainly
// another's, destinations given together (a default is not given; a
// KATATRACE_* twin is), and OpenTelemetry's variables with bad values are
// usage errors that say what to give instead, naming the variable.
func TestDestinationsCannotBeMisread(t *testing.T) {
	t.Parallel()
	fwd, udp := "kata-trace-forwarder", "vsock-to-udp-server"
	tests := []struct {
		name string
		env  []string
		args []string
		want []string
		not  []string
	}{
		{"OTLP/HTTP's port to --otlp-endpoint", nil, []string{fwd, "--otlp-endpoint", "http://127.0.0.1:4318"},
			[]string{"--otlp-endpoint", "OTLP/HTTP", "--to otlphttp://127.0.0.1:4318", "OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf"}, nil},
		{"OTLP/HTTP's path to --otlp-endpoint", nil, []string{fwd, "--otlp-endpoint", "http://collector:4317/v1/traces"},
			[]string{"--otlp-endpoint", "OTLP/HTTP", "otlphttp://"}, nil},
		{"--otlp-endpoint without a scheme", nil, []string{fwd, "--otlp-endpoint", "127.0.0.1:4317"},
			[]string{"--otlp-endpoint", "http://127.0.0.1:4317", "otlp://"}, []string{"vsock://", "unix://"}},
		{"--to without a scheme", nil, []string{udp, "--to", "127.0.0.1:4318"},
			[]string{"--to", "example: otlphttp://127.0.0.1:4318", "udp://HOST:6831"}, []string{"vsock://", "unix://"}},
		{"OTLP's gRPC port to a Jaeger collector", nil, []string{udp, "--to", "http://127.0.0.1:4317"}, []string{"--to", "Jaeger collector", "otlp://", "otlphttp://"}, nil},
		{"OTLP's HTTP port to a Jaeger collector", nil, []string{fwd, "--to", "http://127.0.0.1:4318"}, []string{"--to", "Jaeger collector", "otlphttp://"}, nil},
		{"OTLP's path to a Jaeger collector", nil, []string{fwd, "--to", "http://collector:80/v1/traces"}, []string{"--to", "example: otlphttp://collector:80/v1/traces"}, nil},
		{"OTLP/HTTP's port to a Jaeger collector, IPv6", nil, []string{udp, "--to", "http://[::1]:4318"}, []string{"--to", "example: otlphttp://[::1]:4318"}, nil},
		{"--to and --otlp-endpoint", nil, []string{fwd, "--to", "print", "--otlp-endpoint", "http://127.0.0.1:4317"}, []string{"one destination", "--to and --otlp-endpoint"}, nil},
		{"--to and --otlp-endpoint from env", []string{"KATATRACE_OTLP_ENDPOINT=http://127.0.0.1:4317"}, []string{fwd, "--to", "print"},
			[]string{"one destination", "$KATATRACE_OTLP_ENDPOINT"}, nil},
		{"--dump-only and --otlp-endpoint", nil, []string{fwd, "--dump-only", "--otlp-endpoint", "http://127.0.0.1:4317"}, []string{"one destination", "--dump-only"}, nil},
		{"--jaeger-* and --otlp-endpoint", nil, []string{fwd, "--jaeger-host", "127.0.0.1", "--jaeger-port", "6831", "--otlp-endpoint", "http://127.0.0.1:4317"},
			[]string{"one destination", "--otlp-endpoint and --jaeger-host"}, nil},
		{"OTLP/HTTP's port under gRPC from env", []string{"OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4318"}, []string{udp},
			[]string{"$OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf"}, nil},
		{"http/json", []string{"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL=http/json"}, []string{fwd}, []string{"$OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "grpc or http/protobuf"}, nil},
		{"bad timeout", []string{"OTEL_EXPORTER_OTLP_TIMEOUT=10s"}, []string{fwd}, []string{"$OTEL_EXPORTER_OTLP_TIMEOUT", "milliseconds"}, nil},
		{"bad compression", []string{"OTEL_EXPORTER_OTLP_COMPRESSION=zstd"}, []string{udp}, []string{"$OTEL_EXPORTER_OTLP_COMPRESSION", "gzip"}, nil},
		{"bad headers", []string{"OTEL_EXPORTER_OTLP_HEADERS=api-key"}, []string{fwd}, []string{"$OTEL_EXPORTER_OTLP_HEADERS", "KEY=VALUE"}, nil},
		{"bad insecure", []string{"OTEL_EXPORTER_OTLP_INSECURE=maybe"}, []string{fwd}, []string{"$OTEL_EXPORTER_OTLP_INSECURE", "true or false"}, nil},
		{"bad resource", []string{"OTEL_RESOURCE_ATTRIBUTES=a=%zz"}, []string{fwd}, []string{"$OTEL_RESOURCE_ATTRIBUTES", "percent"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel() // each only parses its flags and exits
			usageError(t, tt.env, tt.args, tt.want, tt.not)
		})
	}
}

// TestOTELIsNoConcernOfOtherDestinations: a role given a destination
// that is no OTLP endpoint (stdout, a Jaeger agent's port) reads none of
// OpenTelemetry's variables: values bad for OTLP, left in the
// environment for another program, do not stop it.
func TestOTELIsNoConcernOfOtherDestinations(t *testing.T) {
	t.Parallel()
	bad := []string{"OTEL_EXPORTER_OTLP_PROTOCOL=http/json", "OTEL_EXPORTER_OTLP_TIMEOUT=5s", "OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4318"}
	for _, args := range [][]string{
		{"kata-trace-forwarder", "--dump-only"},
		{"kata-trace-forwarder", "--jaeger-port", "6831"},
		{"kata-trace-forwarder", "--to", "print"},
		{"vsock-to-udp-server", "--to", "udp://127.0.0.1:6831"},
	} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			t.Parallel()
			sock := "unix://" + filepath.Join(testutil.SockDir(t), "vm.sock_6831")
			p := start(t, bad, args[0], append(args[1:], "--from", sock)...)
			p.WaitLog("listening")
		})
	}
}

// TestOTELServiceNameForEverySink: OTEL_SERVICE_NAME names the agents
// whose resource names none for every destination, as --trace-name
// does, while the exporter's variables beside it (bad for OTLP here) are
// no concern of a destination that is not OTLP.
func TestOTELServiceNameForEverySink(t *testing.T) {
	t.Parallel()
	sock := filepath.Join(testutil.SockDir(t), "kata.hvsock")
	p := start(t, []string{"OTEL_SERVICE_NAME=agent-from-env", "OTEL_EXPORTER_OTLP_TIMEOUT=5s"}, "kata-trace-forwarder", "--to", "jsonl", "--socket-path", sock)
	p.WaitLog("listening")
	katatest.Send(t, sock+"_10240", katatest.Capture(t, "json-otel017-api"))
	testutil.Eventually(t, 10*time.Second, "6 spans on stdout", func() bool { return strings.Count(p.Stdout.String(), "\n") >= 6 })
	for _, line := range strings.Split(strings.TrimSpace(p.Stdout.String()), "\n") {
		if !strings.Contains(line, `"service":"agent-from-env"`) {
			t.Fatalf("a span not named by OTEL_SERVICE_NAME: %s", line)
		}
	}
}

// TestForwarderTakesOTELEnvironment: with no destination flag, the
// forwarder sends where OpenTelemetry's variables say, as they say:
// OTLP/HTTP at the base endpoint's /v1/traces, gzip, the headers
// percent-decoded, the service name for the agent that names none, and
// resource attributes that never override the host's; over gRPC, the
// signal's own endpoint wins, gzip too. katatrace's own variables come
// before OpenTelemetry's.
func TestForwarderTakesOTELEnvironment(t *testing.T) {
	t.Parallel()
	httpEP, grpcEP, ownEP := otlptest.New(t), otlptest.NewGRPC(t), otlptest.New(t)
	tlsEP, ca := otlptest.NewTLS(t)
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, ca, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, ep := range []*otlptest.Endpoint{httpEP, grpcEP, ownEP, tlsEP} {
		ep.Up.Store(true)
	}
	otel := []string{"OTEL_EXPORTER_OTLP_COMPRESSION=gzip", "OTEL_EXPORTER_OTLP_HEADERS=api-key=se%2Ccret, x-tenant = t1",
		"OTEL_SERVICE_NAME=agent-from-env", "OTEL_RESOURCE_ATTRIBUTES=deployment.environment=test,katatrace.guest=spoofed"}
	for _, tt := range []struct {
		name      string
		ep        *otlptest.Endpoint
		env       []string
		path, key string
		gzip      bool
		service   string
	}{
		{"http", httpEP, []string{"OTEL_EXPORTER_OTLP_ENDPOINT=" + httpEP.URL + "/base/", "OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf"},
			"/base/v1/traces", "se,cret", true, "agent-from-env"},
		{"grpc", grpcEP, []string{"OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:1", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=http://" + grpcEP.URL},
			"", "se,cret", true, "agent-from-env"},
		{"https, verified by the certificate named", tlsEP, []string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=" + tlsEP.URL + "/v1/traces",
			"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL=http/protobuf", "OTEL_EXPORTER_OTLP_CERTIFICATE=" + caFile},
			"/v1/traces", "se,cret", true, "agent-from-env"},
		{"katatrace's own first", ownEP, []string{"OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:1", "KATATRACE_TO=otlphttp://" + strings.TrimPrefix(ownEP.URL, "http://") + "/own",
			"KATATRACE_OTLP_HEADER=api-key=mine", "KATATRACE_OTLP_COMPRESSION=none", "KATATRACE_TRACE_NAME=own-name"},
			"/own", "mine", false, "own-name"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			sock := filepath.Join(testutil.SockDir(t), "kata.hvsock")
			p := start(t, append(tt.env, otel...), "kata-trace-forwarder", "--socket-path", sock)
			p.WaitLog("listening")
			katatest.Send(t, sock+"_10240", katatest.Capture(t, "json-otel017-api"))
			testutil.Eventually(t, 10*time.Second, "6 spans at the endpoint", func() bool { n, _ := tt.ep.Spans(); return n == 6 })
			for _, r := range tt.ep.Requests() {
				if r.Path != tt.path || r.Gzip != tt.gzip || r.Header.Get("api-key") != tt.key {
					t.Fatalf("request to %q, gzip %v, headers %v", r.Path, r.Gzip, r.Header)
				}
				for _, res := range r.Resources {
					if res["service.name"] != tt.service || res["deployment.environment"] != "test" || !strings.HasPrefix(res["katatrace.guest"], "unix://") {
						t.Fatalf("resource %v", res)
					}
				}
			}
		})
	}
}

// TestJaegerRelayTakesOTELEndpoint: vsock-to-udp-server's --to, not
// given, is OpenTelemetry's endpoint where one is set; given (here by
// $KATATRACE_TO), it is the flag's.
func TestJaegerRelayTakesOTELEndpoint(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name string
		env  []string
		want string
	}{
		{"otel", []string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=https://otel.invalid:4317"}, "to=otlps://otel.invalid:4317"},
		{"katatrace's own first", []string{"OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4317", "KATATRACE_TO=udp://127.0.0.1:6831"}, "to=udp://127.0.0.1:6831"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			sock := filepath.Join(testutil.SockDir(t), "h_6831")
			p := start(t, tt.env, "vsock-to-udp-server", "--from", "unix://"+sock)
			p.WaitLog(tt.want)
		})
	}
}
