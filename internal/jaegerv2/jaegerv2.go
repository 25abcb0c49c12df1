// Package jaegerv2 is the configuration the tests and the bench give the
// Jaeger v2 they run: in-memory storage, every receiver and the query API
// bound to 127.0.0.1 on the ports given, Jaeger's own telemetry off.
package jaegerv2

import "fmt"

// Ports are where Jaeger listens.
type Ports struct {
	UDP, HTTP, Query, QueryGRPC, OTLPGRPC, OTLPHTTP int
}

// Env turns off Jaeger's own tracing, which would export to
// localhost:4317.
var Env = []string{"OTEL_TRACES_EXPORTER=none", "OTEL_SDK_DISABLED=true"}

// Config is Jaeger's YAML configuration.
func Config(p Ports) string {
	return fmt.Sprintf(config, p.UDP, p.HTTP, p.Query, p.QueryGRPC, p.OTLPGRPC, p.OTLPHTTP)
}

const config = `
service:
  extensions: [jaeger_storage, jaeger_query]
  pipelines:
    traces:
      receivers: [jaeger, otlp]
      processors: [batch]
      exporters: [jaeger_storage_exporter]
  telemetry:
    metrics:
      level: none
    logs:
      level: warn
extensions:
  jaeger_query:
    storage:
      traces: mem
    http:
      endpoint: 127.0.0.1:%[3]d
    grpc:
      endpoint: 127.0.0.1:%[4]d
  jaeger_storage:
    backends:
      mem:
        memory:
          max_traces: 100000
receivers:
  jaeger:
    protocols:
      thrift_compact:
        endpoint: 127.0.0.1:%[1]d
        socket_buffer_size: 4194304
        queue_size: 10000
      thrift_http:
        endpoint: 127.0.0.1:%[2]d
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:%[5]d
      http:
        endpoint: 127.0.0.1:%[6]d
processors:
  batch:
exporters:
  jaeger_storage_exporter:
    trace_storage: mem
`
