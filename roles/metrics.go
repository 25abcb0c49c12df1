package roles

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/katatrace/katatrace/endpoint"
	"github.com/katatrace/katatrace/metrics"
	"github.com/katatrace/katatrace/sink"
)

// metricsOption is --metrics-listen, on the host servers and guest relays.
type metricsOption struct {
	MetricsListen endpoint.Addr `help:"Serve Prometheus metrics at /metrics here: tcp://127.0.0.1:9464, unix:///path or vsock://any:PORT. Off when empty." placeholder:"ADDR"`
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
func (m *metricsOption) serveMetrics(rc *RunContext, cs ...prometheus.Collector) (stop func(), err error) {
	if m.MetricsListen.Scheme == "" {
		return func() {}, nil
	}
	srv, err := metrics.Serve(m.MetricsListen, rc.Log, cs...)
	if err != nil {
		return nil, listenErr("metrics-listen", m.MetricsListen, err)
	}
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	}, nil
}

// sinkDrops reports what a sink drops itself, for the metrics.
func sinkDrops(s sink.Sink) metrics.SinkDrops {
	for {
		w, ok := s.(interface{ Unwrap() sink.Sink })
		if !ok {
			break
		}
		s = w.Unwrap()
	}
	switch s := s.(type) {
	case *sink.CollectorSink:
		return func() map[string]uint64 {
			st := s.Stats()
			return map[string]uint64{"sink_dropped": st.Dropped, "sink_rejected": st.Rejected}
		}
	case *sink.PacketSink:
		return func() map[string]uint64 { return map[string]uint64{"sink_port_closed": s.Unseen()} }
	}
	return nil
}
