package sink

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/katatrace/katatrace/guestid"
	"github.com/katatrace/katatrace/internal/jaegertest"
	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
)

func TestRetryBackoffJitterAndThrottle(t *testing.T) {
	p := retryPolicy{Initial: 100 * time.Millisecond, Max: 400 * time.Millisecond, Multiplier: 2, Jitter: 0.5, MaxElapsed: time.Minute}
	now := time.Unix(1000, 0)
	r := p.begin(now)
	plain := errors.New("connection refused")
	var waits []time.Duration
	for _, want := range []time.Duration{100, 200, 400, 400} {
		want *= time.Millisecond
		d, ok := r.next(plain, now)
		if !ok || d < want/2 || d > want*3/2 {
			t.Fatalf("wait %v (%v), want %v ± half", d, ok, want)
		}
		waits = append(waits, d)
	}
	if waits[2] == waits[3] {
		t.Logf("two equal jittered waits %v: possible, unlikely", waits[2])
	}

	grpcErr, _ := status.New(codes.ResourceExhausted, "slow down").WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(7 * time.Second)})
	for name, err := range map[string]error{
		"Retry-After": &throttled{err: plain, after: 7 * time.Second},
		"RetryInfo":   grpcErr.Err(),
	} {
		if d, ok := p.begin(now).next(err, now); !ok || d != 7*time.Second {
			t.Errorf("%s: wait %v, %v; want the server's 7s", name, d, ok)
		}
	}

	// A server asking for less than the backoff does not shorten it: after
	// three failures the backoff is 400ms ± half; "come back in 10ms" (or
	// 1s, above it) raises the wait, never lowers it.
	grpcSoon, _ := status.New(codes.ResourceExhausted, "slow down").WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(10 * time.Millisecond)})
	for _, tt := range []struct {
		name string
		err  error
		min  time.Duration
		max  time.Duration
	}{
		{"Retry-After below", &throttled{err: plain, after: 10 * time.Millisecond}, 200 * time.Millisecond, 600 * time.Millisecond},
		{"RetryInfo below", grpcSoon.Err(), 200 * time.Millisecond, 600 * time.Millisecond},
		{"Retry-After above", &throttled{err: plain, after: time.Second}, time.Second, time.Second},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := p.begin(now)
			for range 3 {
				r.next(plain, now)
			}
			for range 20 { // the jitter's draws vary
				if d, ok := r.next(tt.err, now); !ok || d < tt.min || d > tt.max {
					t.Fatalf("wait %v (%v), want %v to %v", d, ok, tt.min, tt.max)
				}
			}
		})
	}

	// The batch's time runs out: no further attempt.
	r = p.begin(now)
	if _, ok := r.next(plain, now.Add(time.Minute)); ok {
		t.Fatal("retried past MaxElapsed")
	}
	if _, ok := p.begin(now).next(&throttled{err: plain, after: 2 * time.Minute}, now); ok {
		t.Fatal("a server's wait beyond MaxElapsed was accepted")
	}
}

func TestRetryAfterHeader(t *testing.T) {
	now := time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)
	for _, tt := range []struct {
		in   string
		want time.Duration
	}{
		{"", 0},
		{"3", 3 * time.Second},
		{"0", 0},
		{"-1", 0},
		{"soon", 0},
		{now.Add(90 * time.Second).Format(http.TimeFormat), 90 * time.Second},
		{now.Add(-time.Hour).Format(http.TimeFormat), 0},
	} {
		t.Run(tt.in, func(t *testing.T) {
			h := http.Header{}
			if tt.in != "" {
				h.Set("Retry-After", tt.in)
			}
			if got := retryAfter(h, now); got != tt.want {
				t.Fatalf("Retry-After %q = %v, want %v", tt.in, got, tt.want)
			}
		})
	}
}

// TestCollectorGivesUpAfterMaxElapsed: a collector that keeps failing gets
// a batch for the retry time, then the batch is dropped and counted; the
// next batch, once the collector is back, is delivered.
func TestCollectorGivesUpAfterMaxElapsed(t *testing.T) {
	var down atomic.Bool
	down.Store(true)
	var calls atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		calls.Add(1)
		if down.Load() {
			w.Header().Set("Retry-After", "0")
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(http.StatusAccepted)
	}))
	defer srv.Close()
	dgs := jaegertest.Capture(t, "svc", jaegertest.SmallTrace)
	s := NewCollectorSink(srv.URL, 1<<20, 1, 0, slog.New(slog.DiscardHandler))
	s.retry = retryPolicy{Initial: 10 * time.Millisecond, Max: 20 * time.Millisecond, Multiplier: 2, Jitter: 0.5, MaxElapsed: 300 * time.Millisecond}
	if err := s.Send(dgs[0], guestid.Named("peer")); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.Flush(ctx); err != nil { // the batch is out of the queue: dropped
		t.Fatal(err)
	}
	if st := s.Stats(); st.Dropped != 1 || st.Posted != 0 || st.Retries < 3 || calls.Load() < 3 {
		t.Fatalf("after the retry time: %+v, %d calls", st, calls.Load())
	}
	down.Store(false)
	if err := s.Send(dgs[0], guestid.Named("peer")); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if st := s.Stats(); st.Posted != 1 || st.Dropped != 1 {
		t.Fatalf("after recovery: %+v", st)
	}
}

// TestOTLPRequestsCoalesce: OTLP requests queued while the endpoint is
// busy go as one (their encodings concatenated), with every span kept.
func TestOTLPRequestsCoalesce(t *testing.T) {
	release := make(chan struct{})
	var calls, spans atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if calls.Add(1) == 1 {
			<-release // the first request holds the worker: the rest queue
		}
		req := ptraceotlp.NewExportRequest()
		if err := req.UnmarshalProto(body); err != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		spans.Add(int64(req.Traces().SpanCount()))
		out, _ := ptraceotlp.NewExportResponse().MarshalProto()
		w.Header().Set("Content-Type", "application/x-protobuf")
		_, _ = w.Write(out)
	}))
	defer srv.Close()
	s, err := NewOTLPSink(OTLPConfig{Endpoint: srv.URL + "/v1/traces"}, 16<<20, 1, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	dgs := jaegertest.Capture(t, "svc", jaegertest.SmallTrace)
	const rounds = 50
	for range rounds {
		for _, p := range dgs {
			if err := s.Send(p, guestid.Named("peer")); err != nil {
				t.Fatal(err)
			}
		}
	}
	close(release)
	if err := s.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	want := int64(4 * rounds)
	if spans.Load() != want || calls.Load() >= int64(rounds*len(dgs)) || s.Stats().Posted != uint64(rounds*len(dgs)) {
		t.Fatalf("%d spans of %d in %d requests for %d batches; stats %+v", spans.Load(), want, calls.Load(), rounds*len(dgs), s.Stats())
	}
	t.Logf("%d batches in %d requests", rounds*len(dgs), calls.Load())
}
