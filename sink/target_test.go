package sink

import (
	"strings"
	"testing"
)

var otlpTests = []struct {
	in, endpoint string
	grpc, tls    bool
	err          string
}{
	{in: "otlp://127.0.0.1:4317", endpoint: "127.0.0.1:4317", grpc: true},
	{in: "otlps://collector.example:443", endpoint: "collector.example:443", grpc: true, tls: true},
	{in: "otlphttp://127.0.0.1:4318", endpoint: "http://127.0.0.1:4318/v1/traces"},
	{in: "otlphttp://[::1]:4318/", endpoint: "http://[::1]:4318/v1/traces"},
	{in: "otlphttps://tempo:4318/otlp/v1/traces", endpoint: "https://tempo:4318/otlp/v1/traces", tls: true},
	{in: "otlp://collector", err: "give the host and the port"},
	{in: "otlp://:4317", err: "give the host and the port"},
	{in: "otlp://h:0", err: "give the host and the port"},
	{in: "otlp://h:4317/v1/traces", err: "takes no path"},
	{in: "otlphttp://u:p@h:4318", err: "not an OTLP endpoint"},
	{in: "otlphttp://h:4318?x=1", err: "not an OTLP endpoint"},
	{in: "otlpgrpc://h:4317", err: "unknown scheme"},
	{in: "otlp:", err: "not an OTLP endpoint"},
}

func TestParseOTLP(t *testing.T) {
	for _, tt := range otlpTests {
		t.Run(tt.in, func(t *testing.T) {
			cfg, err := parseOTLP(tt.in)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) || !strings.Contains(err.Error(), "example") {
					t.Fatalf("err %v, want %q with an example", err, tt.err)
				}
				return
			}
			if err != nil || cfg.Endpoint != tt.endpoint || cfg.GRPC != tt.grpc || cfg.TLS != tt.tls {
				t.Fatalf("got %+v, %v; want %s grpc=%v tls=%v", cfg, err, tt.endpoint, tt.grpc, tt.tls)
			}
		})
	}
}

func FuzzParseOTLP(f *testing.F) {
	for _, tt := range otlpTests {
		f.Add(tt.in)
	}
	f.Fuzz(func(t *testing.T, s string) {
		cfg, err := parseOTLP(s)
		if err != nil {
			return
		}
		if cfg.Endpoint == "" || strings.ContainsAny(cfg.Endpoint, "\r\n") {
			t.Fatalf("%q gave endpoint %q", s, cfg.Endpoint)
		}
	})
}
