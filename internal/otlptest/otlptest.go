// Package otlptest is an OTLP/HTTP endpoint for tests: down (503) until
// told it is up, then counting every span it accepts, by span id, so that
// a test can tell each arrived once.
package otlptest

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"

	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"

	"github.com/katatrace/katatrace/internal/testutil"
)

// Endpoint is the test's OTLP/HTTP endpoint; URL is where it takes
// export requests (any path).
type Endpoint struct {
	URL string
	// Up, while false, answers every request 503 (retryable).
	Up atomic.Bool

	mu        sync.Mutex
	seen      map[string]int
	resources map[string]map[string]any // distinct resources' attributes, by their text
}

// New starts an endpoint, down; it stops when the test ends.
func New(t testing.TB) *Endpoint {
	e, stop := Start()
	t.Cleanup(stop)
	return e
}

// Start starts an endpoint, down, outside a test (a benchmark program);
// stop stops it.
func Start() (e *Endpoint, stop func()) {
	e = &Endpoint{seen: map[string]int{}, resources: map[string]map[string]any{}}
	srv := httptest.NewServer(http.HandlerFunc(e.serve))
	e.URL = srv.URL
	return e, srv.Close
}

func (e *Endpoint) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	if !e.Up.Load() {
		w.WriteHeader(http.StatusServiceUnavailable)
		return
	}
	req := ptraceotlp.NewExportRequest()
	if err := req.UnmarshalProto(body); err != nil {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	e.mu.Lock()
	rss := req.Traces().ResourceSpans()
	for i := range rss.Len() {
		attrs := rss.At(i).Resource().Attributes().AsRaw()
		e.resources[fmt.Sprint(attrs)] = attrs // fmt sorts a map's keys
		for j := range rss.At(i).ScopeSpans().Len() {
			ss := rss.At(i).ScopeSpans().At(j).Spans()
			for k := range ss.Len() {
				e.seen[ss.At(k).SpanID().String()]++
			}
		}
	}
	e.mu.Unlock()
	out, _ := ptraceotlp.NewExportResponse().MarshalProto()
	w.Header().Set("Content-Type", "application/x-protobuf")
	_, _ = w.Write(out)
}

// Spans is how many distinct spans arrived, and how many of them more
// than once.
func (e *Endpoint) Spans() (distinct, twice int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return testutil.Distinct(e.seen)
}

// Resources are the distinct resources spans arrived with, as their
// attributes.
func (e *Endpoint) Resources() []map[string]any {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make([]map[string]any, 0, len(e.resources))
	for _, r := range e.resources {
		out = append(out, r)
	}
	return out
}
