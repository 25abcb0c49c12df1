package roles

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/katatrace/katatrace/endpoint"
	"github.com/katatrace/katatrace/metrics"
)

// metricsOption is --metrics-listen, on the host servers and guest relays.
type metricsOption struct {
	MetricsListen endpoint.Addr `help:"Serve Prometheus metrics at /metrics here: tcp://127.0.0.1:9464, unix:///path or vsock://any:PORT. Off when empty." placeholder:"ADDR" addr:"listen tcp unix vsock" addrport:"9464" addrexample:"tcp://127.0.0.1:9464"`
}

func (m *metricsOption) validate() error {
	if m.MetricsListen.Scheme == "" {
		return nil
	}
	if err := m.MetricsListen.Require("metrics are served on", endpoint.SchemeTCP, endpoint.SchemeUnix, endpoint.SchemeVsock); err != nil {
		return flagErr("metrics-listen", err)
	}
	return nil
}

// serveMetrics starts the metrics server, if asked for; stop ends it.
// ready says why the role is not ready (/readyz), or nil.
func (m *metricsOption) serveMetrics(rc *RunContext, ready func() error, cs ...prometheus.Collector) (stop func(), err error) {
	if m.MetricsListen.Scheme == "" {
		return func() {}, nil
	}
	srv, err := metrics.Serve(m.MetricsListen, rc.Log, metrics.Health{Role: rc.Role, Version: rc.Version, Ready: ready}, cs...)
	if err != nil {
		return nil, listenErr("metrics-listen", m.MetricsListen, err)
	}
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	}, nil
}
