package sink

import (
	"bytes"
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/katatrace/katatrace/internal/jaegertest"
	"github.com/katatrace/katatrace/internal/otlptest"
)

// TestWrongProtocolIsSaidNotRetried: an endpoint of another protocol (an
// OTLP/gRPC client at an OTLP/HTTP server, and the reverse; a Jaeger
// collector's client at a gRPC server) or an HTTP endpoint with nothing
// at the URL is no outage: each batch is dropped and counted as refused
// at once, not retried for the retry time, and the log says the likely
// cause and what to give instead.
func TestWrongProtocolIsSaidNotRetried(t *testing.T) {
	dgs := jaegertest.Capture(t, "svc", jaegertest.SmallTrace)
	httpEP, grpcEP := otlptest.New(t), otlptest.NewGRPC(t)
	httpEP.Up.Store(true)
	grpcEP.Up.Store(true)
	notFound := httptest.NewServer(http.NotFoundHandler())
	defer notFound.Close()
	otlp := func(cfg OTLPConfig) func(*slog.Logger) (*CollectorSink, error) {
		return func(log *slog.Logger) (*CollectorSink, error) { return NewOTLPSink(cfg, 16<<20, 1, log) }
	}
	for _, tt := range []struct {
		name string
		open func(*slog.Logger) (*CollectorSink, error)
		want []string
	}{
		{"OTLP/gRPC at OTLP/HTTP", otlp(OTLPConfig{GRPC: true, Endpoint: strings.TrimPrefix(httpEP.URL, "http://")}),
			[]string{"another protocol", "frame too large", "otlphttp://"}},
		{"OTLP/HTTP at OTLP/gRPC", otlp(OTLPConfig{Endpoint: "http://" + grpcEP.URL + "/v1/traces"}),
			[]string{"another protocol", "OTLP/gRPC", "otlp://"}},
		{"Jaeger at OTLP/gRPC", func(log *slog.Logger) (*CollectorSink, error) {
			return NewCollectorSink("http://"+grpcEP.URL+"/api/traces", 16<<20, 1, 0, log), nil
		}, []string{"another protocol", "otlp://"}},
		{"OTLP/HTTP with TLS at a server in the clear", otlp(OTLPConfig{Endpoint: strings.Replace(httpEP.URL, "http://", "https://", 1) + "/v1/traces", TLS: true}),
			[]string{"another protocol", "does not speak TLS"}},
		{"OTLP/gRPC with TLS at a server in the clear", otlp(OTLPConfig{GRPC: true, TLS: true, Endpoint: strings.TrimPrefix(httpEP.URL, "http://")}),
			[]string{"another protocol", "does not speak TLS"}},
		{"OTLP/HTTP at nothing", otlp(OTLPConfig{Endpoint: notFound.URL + "/v1/traces"}),
			[]string{"refused", "404", "/v1/traces, on port 4318"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var logs bytes.Buffer
			s, err := tt.open(slog.New(slog.NewTextHandler(&logs, nil)))
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range dgs {
				if err := s.Send(p, testPeer); err != nil {
					t.Fatal(err)
				}
			}
			// Far below the retry time: a batch retried is still held.
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			err = s.Close(ctx)
			st := s.Stats()
			if err != nil || st.Rejected != uint64(len(dgs)) || st.Retries != 0 || st.Dropped != 0 {
				t.Fatalf("close: %v; stats %+v; want %d batches refused, none retried", err, st, len(dgs))
			}
			for _, w := range tt.want {
				if !strings.Contains(logs.String(), w) {
					t.Errorf("log lacks %q:\n%s", w, logs.String())
				}
			}
		})
	}
}

// TestPartialSuccessIsCountedRejected: spans an endpoint rejects from a
// request it takes (OTLP's partial success, over gRPC and HTTP) are
// counted and logged, not taken as delivered.
func TestPartialSuccessIsCountedRejected(t *testing.T) {
	dgs := jaegertest.Capture(t, "svc", jaegertest.SmallTrace)
	httpEP, grpcEP := otlptest.New(t), otlptest.NewGRPC(t)
	for _, tt := range []struct {
		name string
		ep   *otlptest.Endpoint
		cfg  OTLPConfig
	}{
		{"grpc", grpcEP, OTLPConfig{GRPC: true, Endpoint: grpcEP.URL, Gzip: true}},
		{"http", httpEP, OTLPConfig{Endpoint: httpEP.URL + "/v1/traces", Gzip: true}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			tt.ep.Up.Store(true)
			tt.ep.Reject.Store(2)
			var logs bytes.Buffer
			s, err := NewOTLPSink(tt.cfg, 16<<20, 1, slog.New(slog.NewTextHandler(&logs, nil)))
			if err != nil {
				t.Fatal(err)
			}
			if err := sendAll(t, s, dgs); err != nil {
				t.Fatal(err)
			}
			reqs := tt.ep.Requests()
			st := s.Stats()
			if len(reqs) == 0 || st.RejectedSpans != uint64(2*len(reqs)) || st.Posted != uint64(len(dgs)) {
				t.Fatalf("%d requests; stats %+v; want 2 spans rejected of each", len(reqs), st)
			}
			if !strings.Contains(logs.String(), "partial success") || !strings.Contains(logs.String(), "spans rejected by the test") {
				t.Errorf("log:\n%s", logs.String())
			}
			for _, r := range reqs {
				if !r.Gzip {
					t.Errorf("a request not compressed: %+v", r)
				}
			}
		})
	}
}
