// Package otlptest is an OTLP endpoint for tests, over HTTP (New) or gRPC
// (NewGRPC): down (503, UNAVAILABLE) until told it is up, then counting
// every span it accepts, by span id, so that a test can tell each arrived
// once, and keeping what each request was (path, headers, compression,
// resources).
package otlptest

import (
	"compress/gzip"
	"context"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"

	"go.opentelemetry.io/collector/pdata/ptrace"
	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	_ "google.golang.org/grpc/encoding/gzip" // takes gzip requests, as collectors do
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/stats"
	"google.golang.org/grpc/status"

	"github.com/katatrace/katatrace/internal/testutil"
)

// Endpoint is the test's OTLP endpoint. URL is where it takes export
// requests: over HTTP, http://127.0.0.1:PORT (any path); over gRPC,
// 127.0.0.1:PORT.
type Endpoint struct {
	URL string
	// Up, while false, answers every request 503 (retryable).
	Up atomic.Bool
	// Reject, when positive, answers each request it takes with a
	// partial success rejecting that many spans.
	Reject atomic.Int64

	mu   sync.Mutex
	seen map[string]int
	reqs []Request
}

// Request is what the endpoint saw of one export request it took.
type Request struct {
	Path   string      // HTTP's
	Header http.Header // HTTP's headers, or gRPC's metadata
	Gzip   bool        // Content-Encoding: gzip, or grpc-encoding: gzip
	// Resources are the attributes of each resource, as strings.
	Resources []map[string]string
}

// New starts an endpoint over HTTP, down; it stops when the test ends.
func New(t testing.TB) *Endpoint {
	e, stop := Start()
	t.Cleanup(stop)
	return e
}

// Start starts an endpoint over HTTP, down, outside a test (a benchmark
// program); stop stops it.
func Start() (e *Endpoint, stop func()) {
	e = &Endpoint{seen: map[string]int{}}
	srv := httptest.NewServer(http.HandlerFunc(e.serve))
	e.URL = srv.URL
	return e, srv.Close
}

// NewTLS starts an endpoint over HTTPS (URL https://127.0.0.1:PORT),
// down; ca is its certificate, PEM, to verify it with. It stops when the
// test ends.
func NewTLS(t testing.TB) (e *Endpoint, ca []byte) {
	e = &Endpoint{seen: map[string]int{}}
	srv := httptest.NewTLSServer(http.HandlerFunc(e.serve))
	t.Cleanup(srv.Close)
	e.URL = srv.URL
	return e, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
}

// NewGRPC starts an endpoint over gRPC, down; it stops when the test
// ends.
func NewGRPC(t testing.TB) *Endpoint {
	e := &Endpoint{seen: map[string]int{}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer(grpc.StatsHandler(compression{}))
	ptraceotlp.RegisterGRPCServer(gs, &grpcServer{e: e})
	go func() { _ = gs.Serve(ln) }()
	t.Cleanup(gs.Stop)
	e.URL = ln.Addr().String()
	return e
}

type grpcServer struct {
	ptraceotlp.UnimplementedGRPCServer
	e *Endpoint
}

func (s *grpcServer) Export(ctx context.Context, req ptraceotlp.ExportRequest) (ptraceotlp.ExportResponse, error) {
	if !s.e.Up.Load() {
		return ptraceotlp.NewExportResponse(), status.Error(codes.Unavailable, "down")
	}
	md, _ := metadata.FromIncomingContext(ctx)
	h := http.Header{}
	for k, vs := range md {
		for _, v := range vs {
			h.Add(k, v)
		}
	}
	gz := false
	if c, ok := ctx.Value(compressionKey{}).(*atomic.Value); ok {
		gz = c.Load() == "gzip"
	}
	return s.e.take(req.Traces(), Request{Header: h, Gzip: gz}), nil
}

// compression notes an RPC's compression (its grpc-encoding, which the
// server takes out of the metadata) in its context.
type compression struct{}

type compressionKey struct{}

func (compression) TagRPC(ctx context.Context, _ *stats.RPCTagInfo) context.Context {
	return context.WithValue(ctx, compressionKey{}, new(atomic.Value))
}

func (compression) HandleRPC(ctx context.Context, s stats.RPCStats) {
	if h, ok := s.(*stats.InHeader); ok {
		if c, ok := ctx.Value(compressionKey{}).(*atomic.Value); ok {
			c.Store(h.Compression)
		}
	}
}

func (compression) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context { return ctx }
func (compression) HandleConn(context.Context, stats.ConnStats)                       {}

func (e *Endpoint) serve(w http.ResponseWriter, r *http.Request) {
	var body io.Reader = r.Body
	gz := r.Header.Get("Content-Encoding") == "gzip"
	if gz {
		zr, err := gzip.NewReader(r.Body)
		if err != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		body = zr
	}
	b, err := io.ReadAll(body)
	if !e.Up.Load() {
		w.WriteHeader(http.StatusServiceUnavailable)
		return
	}
	req := ptraceotlp.NewExportRequest()
	if err != nil || req.UnmarshalProto(b) != nil {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	resp := e.take(req.Traces(), Request{Path: r.URL.Path, Header: r.Header.Clone(), Gzip: gz})
	out, _ := resp.MarshalProto()
	w.Header().Set("Content-Type", "application/x-protobuf")
	_, _ = w.Write(out)
}

// take counts td's spans and keeps the request; its answer says what
// Reject asks for.
func (e *Endpoint) take(td ptrace.Traces, r Request) ptraceotlp.ExportResponse {
	e.mu.Lock()
	defer e.mu.Unlock()
	rss := td.ResourceSpans()
	for i := range rss.Len() {
		attrs := map[string]string{}
		for k, v := range rss.At(i).Resource().Attributes().All() {
			attrs[k] = v.AsString()
		}
		r.Resources = append(r.Resources, attrs)
		for j := range rss.At(i).ScopeSpans().Len() {
			ss := rss.At(i).ScopeSpans().At(j).Spans()
			for k := range ss.Len() {
				e.seen[ss.At(k).TraceID().String()+"/"+ss.At(k).SpanID().String()]++
			}
		}
	}
	e.reqs = append(e.reqs, r)
	resp := ptraceotlp.NewExportResponse()
	if n := e.Reject.Load(); n > 0 {
		resp.PartialSuccess().SetRejectedSpans(n)
		resp.PartialSuccess().SetErrorMessage("spans rejected by the test")
	}
	return resp
}

// Spans is how many distinct spans arrived, and how many of them more
// than once.
func (e *Endpoint) Spans() (distinct, twice int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return testutil.Distinct(e.seen)
}

// Requests are the export requests taken so far.
func (e *Endpoint) Requests() []Request {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]Request(nil), e.reqs...)
}

// Resources are the distinct resources spans arrived with, as their
// attributes.
func (e *Endpoint) Resources() []map[string]string {
	e.mu.Lock()
	defer e.mu.Unlock()
	seen := map[string]bool{}
	var out []map[string]string
	for _, r := range e.reqs {
		for _, attrs := range r.Resources {
			if k := fmt.Sprint(attrs); !seen[k] { // fmt sorts a map's keys
				seen[k] = true
				out = append(out, attrs)
			}
		}
	}
	return out
}
