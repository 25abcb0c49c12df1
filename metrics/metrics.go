package metrics

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"runtime"
	"time"

	"github.com/katatrace/katatrace/endpoint"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Server serves /metrics until Shutdown.
type Server struct {
	http *http.Server
	done chan struct{}
}

// Health is what /healthz, /readyz and katatrace_build_info say.
type Health struct {
	// Role and Version label katatrace_build_info.
	Role, Version string
	// Ready says why the process is not ready to do its job (no socket
	// listening, its endpoint unreachable), or nil; nil Ready is always
	// ready.
	Ready func() error
}

// Serve listens on a (tcp://, unix:// or vsock://) and serves the given
// collectors, with the process's, the Go runtime's and
// katatrace_build_info, at /metrics; /healthz answers while the process
// serves, /readyz while h.Ready has no objection (503 with its reason
// otherwise), as the OpenTelemetry Collector's and Jaeger's do.
func Serve(a endpoint.Addr, log *slog.Logger, h Health, cs ...prometheus.Collector) (*Server, error) {
	reg, err := newRegistry(h, cs...)
	if err != nil {
		return nil, err
	}
	ln, err := endpoint.Listen(a)
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn), MaxRequestsInFlight: 4, Timeout: 10 * time.Second,
	}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if h.Ready != nil {
			if err := h.Ready(); err != nil {
				http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
				return
			}
		}
		fmt.Fprintln(w, "ready")
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/" {
			http.NotFound(w, r)
			return
		}
		fmt.Fprintln(w, "katatrace: metrics at /metrics, liveness at /healthz, readiness at /readyz")
	})
	s := &Server{
		http: &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelDebug)},
		done: make(chan struct{}),
	}
	go func() {
		defer close(s.done)
		if err := s.http.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Warn("metrics server stopped", "listen", a.String(), "err", err)
		}
	}()
	log.Info("serving metrics", "listen", a.String(), "paths", "/metrics /healthz /readyz")
	return s, nil
}

// newRegistry holds cs and what every role serves beside them: the
// process's, the Go runtime's and katatrace_build_info. The deploy tests
// read what it describes.
func newRegistry(h Health, cs ...prometheus.Collector) (*prometheus.Registry, error) {
	reg := prometheus.NewRegistry()
	build := prometheus.NewGauge(prometheus.GaugeOpts{Name: "katatrace_build_info", Help: "Always 1; its labels say which build and role is running.",
		ConstLabels: prometheus.Labels{"version": h.Version, "goversion": runtime.Version(), "role": h.Role}})
	build.Set(1)
	cs = append(cs, build, collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), collectors.NewGoCollector())
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("metrics: %w", err)
		}
	}
	return reg, nil
}

// Shutdown stops serving, letting a scrape in progress end (bounded by ctx).
func (s *Server) Shutdown(ctx context.Context) error {
	err := s.http.Shutdown(ctx)
	<-s.done
	return err
}
