package sink

import (
	"context"
	"encoding/pem"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"
	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/katatrace/katatrace/guestid"
	"github.com/katatrace/katatrace/internal/jaegertest"
	"github.com/opentracing/opentracing-go"
)

var testPeer = guestid.ID{Guest: "unix:///run/vc/firecracker/abc/root/kata.hvsock_6831", Conn: "unix:///run/vc/firecracker/abc/root/kata.hvsock_6831#7"}

// otlpSpans flattens an export request: span name → span, with the
// resource attributes of each.
type otlpSpan struct {
	span     ptrace.Span
	resource pcommon.Map
}

func otlpSpans(t *testing.T, td ptrace.Traces) map[string][]otlpSpan {
	t.Helper()
	out := map[string][]otlpSpan{}
	rss := td.ResourceSpans()
	for i := range rss.Len() {
		rs := rss.At(i)
		for j := range rs.ScopeSpans().Len() {
			ss := rs.ScopeSpans().At(j).Spans()
			for k := range ss.Len() {
				out[ss.At(k).Name()] = append(out[ss.At(k).Name()], otlpSpan{ss.At(k), rs.Resource().Attributes()})
			}
		}
	}
	return out
}

func TestJaegerToOTLP(t *testing.T) {
	n := 0
	spans := map[string][]otlpSpan{}
	for _, p := range jaegertest.Capture(t, "svc", jaegertest.SmallTrace) {
		body, k, err := jaegerToOTLP(p, testPeer)
		if err != nil {
			t.Fatal(err)
		}
		n += k
		req, err := traces(body)
		if err != nil {
			t.Fatal(err)
		}
		for name, s := range otlpSpans(t, req.Traces()) {
			spans[name] = append(spans[name], s...)
		}
	}
	if n != 4 || len(spans["root"]) != 1 || len(spans["boot"]) != 1 {
		t.Fatalf("%d spans: %v", n, spans)
	}
	root, boot := spans["root"][0], spans["boot"][0]
	if boot.span.ParentSpanID() != root.span.SpanID() || boot.span.TraceID() != root.span.TraceID() {
		t.Fatalf("boot's parent %v, root %v", boot.span.ParentSpanID(), root.span.SpanID())
	}
	if v, _ := boot.span.Attributes().Get("i"); v.Int() != 0 {
		t.Fatalf("boot's tag i = %v", v.AsRaw())
	}
	if boot.span.Events().Len() != 1 {
		t.Fatalf("boot's logs: %d events", boot.span.Events().Len())
	}
	res := root.resource.AsRaw()
	if res["service.name"] != "svc" || res[AttrGuest] != "unix:///run/vc/firecracker/abc/root/kata.hvsock_6831" || res[AttrGuestPeer] != testPeer.Conn {
		t.Fatalf("resource %v", res)
	}
	if _, _, err := jaegerToOTLP([]byte("not thrift"), testPeer); err == nil {
		t.Fatal("garbage was translated")
	}
}

// otlpHTTPServer answers each request with the next status of script
// (then 200), keeping the spans of what it accepted.
func otlpHTTPServer(t *testing.T, script ...int) (*httptest.Server, *atomic.Int64, *sync.Map) {
	var calls, accepted atomic.Int64
	var headers sync.Map
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		i := int(calls.Add(1)) - 1
		headers.Store("api-key", r.Header.Get("Api-Key"))
		if r.URL.Path != "/v1/traces" || r.Header.Get("Content-Type") != "application/x-protobuf" {
			w.WriteHeader(http.StatusNotFound)
			return
		}
		if i < len(script) {
			w.WriteHeader(script[i])
			return
		}
		req, err := traces(body)
		if err != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		accepted.Add(int64(req.Traces().SpanCount()))
		w.Header().Set("Content-Type", "application/x-protobuf")
		out, _ := ptraceotlp.NewExportResponse().MarshalProto()
		_, _ = w.Write(out)
	}))
	t.Cleanup(srv.Close)
	return srv, &accepted, &headers
}

func sendAll(t *testing.T, s *CollectorSink, dgs [][]byte) error {
	for _, p := range dgs {
		if err := s.Send(p, testPeer); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	return s.Close(ctx)
}

// TestOTLPHTTPRetriesThenDelivers: an endpoint that answers 503 twice and
// then 200 gets every span; the flush returns only once it has.
func TestOTLPHTTPRetriesThenDelivers(t *testing.T) {
	dgs := jaegertest.Capture(t, "svc", func(tr opentracing.Tracer) { jaegertest.SmallTrace(tr); jaegertest.BigTrace(tr) })
	srv, accepted, headers := otlpHTTPServer(t, 503, 503)
	s, err := NewOTLPSink(OTLPConfig{Endpoint: srv.URL + "/v1/traces", Headers: map[string]string{"api-key": "secret"}}, 16<<20, 1, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if err := sendAll(t, s, dgs); err != nil {
		t.Fatal(err)
	}
	st := s.Stats()
	if accepted.Load() != 45 || st.Posted != uint64(len(dgs)) || st.Retries < 2 || st.Dropped+st.Rejected != 0 {
		t.Fatalf("endpoint got %d spans of 45; stats %+v", accepted.Load(), st)
	}
	if v, _ := headers.Load("api-key"); v != "secret" {
		t.Fatalf("api-key header %q", v)
	}
}

// TestOTLPHTTPRejectionIsFinal: a 400 is dropped and counted, not retried.
func TestOTLPHTTPRejectionIsFinal(t *testing.T) {
	dgs := jaegertest.Capture(t, "svc", jaegertest.SmallTrace)
	script := make([]int, len(dgs))
	for i := range script {
		script[i] = http.StatusBadRequest
	}
	srv, accepted, _ := otlpHTTPServer(t, script...)
	s, err := NewOTLPSink(OTLPConfig{Endpoint: srv.URL + "/v1/traces"}, 16<<20, 1, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if err := sendAll(t, s, dgs); err != nil {
		t.Fatal(err)
	}
	if st := s.Stats(); st.Rejected != uint64(len(dgs)) || st.Retries != 0 || accepted.Load() != 0 {
		t.Fatalf("stats %+v, accepted %d; want every batch rejected once", st, accepted.Load())
	}
}

// traceServer is an OTLP/gRPC receiver that fails the first calls with
// the codes given.
type traceServer struct {
	ptraceotlp.UnimplementedGRPCServer
	mu     sync.Mutex
	script []codes.Code
	spans  int
	apiKey string
}

func (s *traceServer) Export(ctx context.Context, req ptraceotlp.ExportRequest) (ptraceotlp.ExportResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if md, ok := metadata.FromIncomingContext(ctx); ok && len(md.Get("api-key")) > 0 {
		s.apiKey = md.Get("api-key")[0]
	}
	if len(s.script) > 0 {
		c := s.script[0]
		s.script = s.script[1:]
		st := status.New(c, "scripted")
		if c == codes.ResourceExhausted {
			// The server says when to come back: that makes it retryable.
			st, _ = st.WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(20 * time.Millisecond)})
		}
		return ptraceotlp.NewExportResponse(), st.Err()
	}
	s.spans += req.Traces().SpanCount()
	return ptraceotlp.NewExportResponse(), nil
}

func startTraceServer(t *testing.T, script ...codes.Code) (*traceServer, string) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ts := &traceServer{script: script}
	gs := grpc.NewServer()
	ptraceotlp.RegisterGRPCServer(gs, ts)
	go func() { _ = gs.Serve(ln) }()
	t.Cleanup(gs.Stop)
	return ts, ln.Addr().String()
}

func TestOTLPGRPC(t *testing.T) {
	dgs := jaegertest.Capture(t, "svc", jaegertest.SmallTrace)
	t.Run("unavailable, then accepted", func(t *testing.T) {
		ts, addr := startTraceServer(t, codes.Unavailable, codes.ResourceExhausted)
		s, err := NewOTLPSink(OTLPConfig{GRPC: true, Endpoint: addr, Headers: map[string]string{"api-key": "k"}}, 16<<20, 1, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		if err := sendAll(t, s, dgs); err != nil {
			t.Fatal(err)
		}
		ts.mu.Lock()
		defer ts.mu.Unlock()
		if st := s.Stats(); ts.spans != 4 || st.Retries < 2 || ts.apiKey != "k" {
			t.Fatalf("server got %d spans of 4, api-key %q; stats %+v", ts.spans, ts.apiKey, st)
		}
	})
	t.Run("invalid argument is final", func(t *testing.T) {
		script := make([]codes.Code, len(dgs))
		for i := range script {
			script[i] = codes.InvalidArgument
		}
		ts, addr := startTraceServer(t, script...)
		s, err := NewOTLPSink(OTLPConfig{GRPC: true, Endpoint: addr}, 16<<20, 1, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		if err := sendAll(t, s, dgs); err != nil {
			t.Fatal(err)
		}
		if st := s.Stats(); st.Rejected != uint64(len(dgs)) || st.Retries != 0 || ts.spans != 0 {
			t.Fatalf("stats %+v", st)
		}
	})
}

// TestOTLPHTTPS: the endpoint's certificate is verified against
// --otlp-ca-file; without it (and without skipping verification) nothing
// is accepted, and that is retried, not rejected.
func TestOTLPHTTPS(t *testing.T) {
	dgs := jaegertest.Capture(t, "svc", jaegertest.SmallTrace)
	var accepted atomic.Int64
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if req, err := traces(body); err == nil {
			accepted.Add(int64(req.Traces().SpanCount()))
		}
	}))
	defer srv.Close()
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o644); err != nil {
		t.Fatal(err)
	}
	s, err := NewOTLPSink(OTLPConfig{Endpoint: srv.URL + "/v1/traces", TLS: true, CAFile: ca}, 16<<20, 1, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if err := sendAll(t, s, dgs); err != nil || accepted.Load() != 4 {
		t.Fatalf("with the CA: %v, %d spans of 4", err, accepted.Load())
	}

	unverified, err := NewOTLPSink(OTLPConfig{Endpoint: srv.URL + "/v1/traces", TLS: true}, 16<<20, 1, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	_ = unverified.Send(dgs[0], testPeer)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	_ = unverified.Close(ctx)
	if st := unverified.Stats(); accepted.Load() != 4 || st.Posted != 0 || st.Dropped != 1 {
		t.Fatalf("an unverified endpoint: accepted %d spans, stats %+v; want nothing posted, the batch dropped at close", accepted.Load(), st)
	}
	if _, err := NewOTLPSink(OTLPConfig{Endpoint: srv.URL, TLS: true, CAFile: filepath.Join(t.TempDir(), "none.pem")}, 1<<20, 1, slog.New(slog.DiscardHandler)); err == nil {
		t.Fatal("a missing CA file was accepted")
	}
}

// jaegerToOTLP is the OTLP export request of one Jaeger datagram.
func jaegerToOTLP(p []byte, from guestid.ID) ([]byte, int, error) {
	return otlpEncoder{}.encode(p, from)
}

// traces reads an export request.
func traces(body []byte) (ptraceotlp.ExportRequest, error) {
	req := ptraceotlp.NewExportRequest()
	return req, req.UnmarshalProto(body)
}
