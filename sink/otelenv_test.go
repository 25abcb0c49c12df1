package sink

import (
	"maps"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestReadOTELEnv: OpenTelemetry's variables as the SDKs read them: the
// signal's own over the general one, empty as unset, headers and
// resource attributes percent-decoded, the service name from
// OTEL_SERVICE_NAME before the resource's; a bad value names its
// variable.
func TestReadOTELEnv(t *testing.T) {
	tests := []struct {
		name  string
		env   map[string]string
		check func(OTELEnv) bool
		err   string
	}{
		{"nothing", nil, func(e OTELEnv) bool { return e.Endpoint == "" && e.Protocol == "" && e.Headers == nil && !e.GzipSet }, ""},
		{"the signal's endpoint wins", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://a:4317", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://b:4317"},
			func(e OTELEnv) bool {
				return e.Endpoint == "http://b:4317" && !e.Base && e.EndpointVar == "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
			}, ""},
		{"an empty one is unset", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://a:4317", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": " "},
			func(e OTELEnv) bool { return e.Endpoint == "http://a:4317" && e.Base }, ""},
		{"headers", map[string]string{"OTEL_EXPORTER_OTLP_HEADERS": "Api-Key=a%3Db%2Cc, x-b = two words,", "OTEL_EXPORTER_OTLP_TRACES_HEADERS": ""},
			func(e OTELEnv) bool {
				return maps.Equal(e.Headers, map[string]string{"api-key": "a=b,c", "x-b": "two words"})
			}, ""},
		{"the signal's headers replace", map[string]string{"OTEL_EXPORTER_OTLP_HEADERS": "a=1", "OTEL_EXPORTER_OTLP_TRACES_HEADERS": "b=2"},
			func(e OTELEnv) bool { return maps.Equal(e.Headers, map[string]string{"b": "2"}) }, ""},
		{"timeout, compression, TLS files", map[string]string{"OTEL_EXPORTER_OTLP_TIMEOUT": "2500", "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION": "gzip",
			"OTEL_EXPORTER_OTLP_CERTIFICATE": "/ca.pem", "OTEL_EXPORTER_OTLP_TRACES_CLIENT_CERTIFICATE": "/c.pem", "OTEL_EXPORTER_OTLP_CLIENT_KEY": "/k.pem", "OTEL_EXPORTER_OTLP_INSECURE": "TRUE"},
			func(e OTELEnv) bool {
				return e.Timeout == 2500*time.Millisecond && e.Gzip && e.CAFile == "/ca.pem" && e.CertFile == "/c.pem" && e.KeyFile == "/k.pem" && e.Insecure
			}, ""},
		{"resource and service", map[string]string{"OTEL_RESOURCE_ATTRIBUTES": "service.name=from-res,k8s.pod.name=p%201", "OTEL_SERVICE_NAME": "svc"},
			func(e OTELEnv) bool {
				return e.ServiceName == "svc" && slices.Equal(e.Resource, []Attr{{"service.name", "from-res"}, {"k8s.pod.name", "p 1"}})
			}, ""},
		{"service from the resource", map[string]string{"OTEL_RESOURCE_ATTRIBUTES": "service.name=from-res"},
			func(e OTELEnv) bool { return e.ServiceName == "from-res" }, ""},
		{"http/json", map[string]string{"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}, nil, "$OTEL_EXPORTER_OTLP_PROTOCOL: \"http/json\": OTLP/HTTP with JSON"},
		{"unknown protocol", map[string]string{"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "udp"}, nil, "$OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"},
		{"timeout 0", map[string]string{"OTEL_EXPORTER_OTLP_TIMEOUT": "0"}, nil, "$OTEL_EXPORTER_OTLP_TIMEOUT"},
		{"header without value", map[string]string{"OTEL_EXPORTER_OTLP_HEADERS": "a=1,b"}, nil, "\"b\" is not KEY=VALUE"},
		{"header with a line break", map[string]string{"OTEL_EXPORTER_OTLP_HEADERS": "a=1%0D%0AHost: x"}, nil, "$OTEL_EXPORTER_OTLP_HEADERS"},
		{"bad percent", map[string]string{"OTEL_RESOURCE_ATTRIBUTES": "a=%G1"}, nil, "$OTEL_RESOURCE_ATTRIBUTES"},
		{"compression", map[string]string{"OTEL_EXPORTER_OTLP_COMPRESSION": "zstd"}, nil, "want gzip or none"},
		{"insecure", map[string]string{"OTEL_EXPORTER_OTLP_TRACES_INSECURE": "yes"}, nil, "$OTEL_EXPORTER_OTLP_TRACES_INSECURE"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, err := ReadOTELEnv(func(k string) (string, bool) { v, ok := tt.env[k]; return v, ok })
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("err %v, want %q", err, tt.err)
				}
				return
			}
			if err != nil || !tt.check(e) {
				t.Fatalf("%+v, %v", e, err)
			}
		})
	}
}

// TestOTLPTargetFromURL: an http(s):// URL under each protocol, as the
// SDKs take it; OTLP/HTTP's plain marks refused under an unasked gRPC.
func TestOTLPTargetFromURL(t *testing.T) {
	tests := []struct {
		in, proto             string
		guard, base, insecure bool
		want, err             string
	}{
		{in: "http://localhost:4317", proto: ProtoGRPC, want: "otlp://localhost:4317"},
		{in: "https://c.example:443/", proto: ProtoGRPC, want: "otlps://c.example:443"},
		{in: "c.example:4317", proto: ProtoGRPC, want: "otlps://c.example:4317"},
		{in: "c.example:4317", proto: ProtoGRPC, insecure: true, want: "otlp://c.example:4317"},
		{in: "http://c:4318", proto: ProtoGRPC, guard: true, err: "plainly OTLP/HTTP's"},
		{in: "http://c:4317/v1/traces", proto: ProtoGRPC, guard: true, err: "plainly OTLP/HTTP's"},
		{in: "http://c:4318", proto: ProtoGRPC, want: "otlp://c:4318"}, // asked for: no guess
		{in: "http://c:4317/x", proto: ProtoGRPC, err: "takes no path"},
		{in: "http://c:4318", proto: ProtoHTTP, base: true, want: "otlphttp://c:4318/v1/traces"},
		{in: "https://c/otlp/", proto: ProtoHTTP, base: true, want: "otlphttps://c:443/otlp/v1/traces"},
		{in: "https://c", proto: ProtoGRPC, want: "otlps://c:443"},
		{in: "http://c:0", proto: ProtoGRPC, err: "give the host and the port"},
		{in: "https://c:443/otlp/", proto: ProtoHTTP, base: true, want: "otlphttps://c:443/otlp/v1/traces"},
		{in: "http://c:4318/custom", proto: ProtoHTTP, want: "otlphttp://c:4318/custom"},
		{in: "ftp://c:1", proto: ProtoGRPC, err: "http://HOST:PORT"},
		{in: "c:4318", proto: ProtoHTTP, err: "http://HOST:PORT"},
	}
	for _, tt := range tests {
		t.Run(tt.in+" "+tt.proto, func(t *testing.T) {
			got, err := OTLPTargetFromURL(tt.in, tt.proto, tt.guard, tt.base, tt.insecure)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("got %v, %v; want %q", got, err, tt.err)
				}
				return
			}
			if err != nil || got.String() != tt.want || got.Kind != KindOTLP {
				t.Fatalf("got %v, %v; want %s", got, err, tt.want)
			}
		})
	}
}

// TestCollectorURLIsNeverOTLP: http:// is a Jaeger collector; OTLP's
// ports and path given to it are refused with what to give instead.
func TestCollectorURLIsNeverOTLP(t *testing.T) {
	for _, s := range []string{"http://127.0.0.1:4317", "http://127.0.0.1:4318", "https://c:443/v1/traces"} {
		var tg Target
		if err := tg.UnmarshalText([]byte(s)); err == nil || !strings.Contains(err.Error(), "otlp://") || !strings.Contains(err.Error(), "otlphttp://") {
			t.Errorf("%s: %v", s, err)
		}
	}
	var tg Target
	if err := tg.UnmarshalText([]byte("http://127.0.0.1:14268")); err != nil || tg.Kind != KindCollector || tg.URL != "http://127.0.0.1:14268/api/traces" {
		t.Errorf("a Jaeger collector: %+v, %v", tg, err)
	}
}
