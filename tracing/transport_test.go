package tracing

import (
	"bytes"
	"cmp"
	"context"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/katatrace/katatrace/endpoint"
	"github.com/katatrace/katatrace/hostrelay"
	"github.com/katatrace/katatrace/internal/jaegertest"
	"github.com/katatrace/katatrace/internal/testutil"
	"github.com/katatrace/katatrace/jaegerthrift"
	"github.com/katatrace/katatrace/sink"
	"github.com/katatrace/katatrace/wire"
	"github.com/opentracing/opentracing-go"
	"github.com/uber/jaeger-client-go"
)

// TestTransportMatchesUDP: spans through Transport decode as the same spans
// the UDP transport sends.
func TestTransportMatchesUDP(t *testing.T) {
	var got [][]byte
	tr := NewTransport(func(p []byte) { got = append(got, append([]byte(nil), p...)) }, 0)
	tracer, closer := jaeger.NewTracer("svc", jaeger.NewConstSampler(true), jaeger.NewRemoteReporter(tr),
		jaeger.TracerOptions.MaxTagValueLength(65000))
	jaegertest.BigTrace(tracer)
	jaegertest.SmallTrace(tracer)
	closer.Close()
	spans := 0
	for _, p := range got {
		if len(p) > 65000 {
			t.Fatalf("batch of %d bytes", len(p))
		}
		b, err := jaegerthrift.DecodeEmitBatch(p)
		if err != nil {
			t.Fatal(err)
		}
		if b.Process.ServiceName != "svc" {
			t.Fatalf("service %q", b.Process.ServiceName)
		}
		spans += len(b.Spans)
	}
	if spans != 45 || len(got) < 2 {
		t.Fatalf("%d spans in %d batches, want 45 in several", spans, len(got))
	}
}

// TestDialTransport: a Go agent's tracer writes straight onto a stream to a
// host relay, and Close returns once the host confirmed everything.
func TestDialTransport(t *testing.T) {
	path := filepath.Join(testutil.SockDir(t), "h_6831")
	ln, err := endpoint.Listen(testutil.Must(endpoint.ParseAddr("unix://" + path)))
	if err != nil {
		t.Fatal(err)
	}
	var out testutil.SyncBuffer
	js := sink.NewJSONLSink(&out)
	srv := hostrelay.NewServer(hostrelay.ServerConfig{Kind: wire.KindJaeger, Sink: js})
	go srv.Serve(ln, "unix://"+path)
	defer srv.Shutdown(context.Background())

	tr := DialTransport(testutil.Must(endpoint.ParseAddr("unix://"+path)), 1<<20, 5*time.Second, nil)
	tracer, closer := jaeger.NewTracer("agent", jaeger.NewConstSampler(true), jaeger.NewRemoteReporter(tr))
	root := tracer.StartSpan("root")
	for range 99 {
		tracer.StartSpan("child", opentracing.ChildOf(root.Context())).Finish()
	}
	root.Finish()
	if err := closer.Close(); err != nil {
		t.Fatal(err)
	}
	if n := countLines(out.String()); n != 100 {
		t.Fatalf("host got %d spans at Close, want 100", n)
	}
}

// TestDialTransportWithoutTheHost: as a Go agent uses it, started before
// the host relay listens. Spans wait in the queue; a host that comes late
// gets every one, and Close returns once it confirmed them all. A host
// that never comes: Close gives up after its flush timeout, with an error
// saying what it could not deliver.
func TestDialTransportWithoutTheHost(t *testing.T) {
	for _, tt := range []struct {
		name string
		host bool
		// flush bounds Close: ample for a host that is there.
		flush time.Duration
	}{{"the host comes late", true, 30 * time.Second}, {"the host never comes", false, 300 * time.Millisecond}} {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(testutil.SockDir(t), "h_6831")
			a := testutil.Must(endpoint.ParseAddr("unix://" + path))
			var logs testutil.SyncBuffer
			tr := DialTransport(a, 1<<20, tt.flush, slog.New(slog.NewTextHandler(&logs, nil)))
			tracer, closer := jaeger.NewTracer("agent", jaeger.NewConstSampler(true),
				jaeger.NewRemoteReporter(tr, jaeger.ReporterOptions.BufferFlushInterval(10*time.Millisecond)))
			root := tracer.StartSpan("root")
			for range 49 {
				tracer.StartSpan("child", opentracing.ChildOf(root.Context())).Finish()
			}
			testutil.Eventually(t, 30*time.Second, "the relay finding no host", func() bool {
				return strings.Contains(logs.String(), "host not reachable")
			})
			var out testutil.SyncBuffer
			if tt.host {
				ln, err := endpoint.Listen(a)
				if err != nil {
					t.Fatal(err)
				}
				srv := hostrelay.NewServer(hostrelay.ServerConfig{Kind: wire.KindJaeger, Sink: sink.NewJSONLSink(&out)})
				go srv.Serve(ln, a.String())
				defer srv.Shutdown(context.Background())
			}
			for range 50 {
				tracer.StartSpan("child", opentracing.ChildOf(root.Context())).Finish()
			}
			root.Finish()
			closed := make(chan error, 1)
			go func() { closed <- closer.Close() }()
			var err error
			select {
			case err = <-closed:
			case <-time.After(60 * time.Second):
				t.Fatal("Close did not return")
			}
			if err != nil {
				t.Fatalf("the tracer's Close: %v (jaeger-client-go discards its transport's)", err)
			}
			// The loss is in the log: the reporter drops Close's error.
			lost := strings.Contains(logs.String(), `level=ERROR msg="tracing: spans not confirmed by the host at close"`)
			switch n := countLines(out.String()); {
			case tt.host && (lost || n != 100):
				t.Fatalf("host got %d spans of 100 at Close; log:\n%s", n, logs.String())
			case !tt.host && !lost:
				t.Fatalf("Close said nothing of the spans no host confirmed; log:\n%s", logs.String())
			}
		})
	}
}

func countLines(s string) int {
	n := 0
	for _, c := range s {
		if c == '\n' {
			n++
		}
	}
	return n
}

// TestTransportHoldsUntilReleased: a held Transport sends nothing until
// released, then every span, renamed as the release says (service and
// source tag), and the spans after it too.
func TestTransportHoldsUntilReleased(t *testing.T) {
	for _, l := range []Labels{{}, {Service: "kata-agent-tracer", Source: "kata-agent-tracer"}} {
		t.Run(l.Service, func(t *testing.T) {
			var got [][]byte
			tr := NewTransport(func(p []byte) { got = append(got, bytes.Clone(p)) }, 0)
			tr.Hold()
			// The spans are handed over here, as the reporter's one
			// goroutine would.
			mem := jaeger.NewInMemoryReporter()
			tracer, closer := jaeger.NewTracer("kata-agent", jaeger.NewConstSampler(true), mem,
				jaeger.TracerOptions.MaxTagValueLength(65000))
			defer closer.Close()
			root := tracer.StartSpan("kata-agent", opentracing.Tag{Key: "source", Value: "agent"})
			jaegertest.BigTrace(tracer)
			for _, s := range mem.GetSpans() {
				if _, err := tr.Append(s.(*jaeger.Span)); err != nil {
					t.Fatal(err)
				}
			}
			for range 3 {
				if _, err := tr.Flush(); err != nil {
					t.Fatal(err)
				}
			}
			if len(got) != 0 {
				t.Fatalf("%d batches sent while held", len(got))
			}
			if !tr.Release(l) || tr.Release(Labels{Service: "other"}) {
				t.Fatal("the first release did not decide alone")
			}
			mem.Reset()
			root.Finish() // after the release
			if _, err := tr.Append(mem.GetSpans()[0].(*jaeger.Span)); err != nil {
				t.Fatal(err)
			}
			if err := tr.Close(); err != nil {
				t.Fatal(err)
			}
			want := cmp.Or(l.Service, "kata-agent")
			spans := 0
			for _, p := range got {
				if len(p) > wire.MaxDatagram {
					t.Fatalf("batch of %d bytes", len(p))
				}
				b, err := jaegerthrift.DecodeEmitBatch(p)
				if err != nil {
					t.Fatal(err)
				}
				if b.Process.ServiceName != want {
					t.Fatalf("service %q, want %q", b.Process.ServiceName, want)
				}
				for _, s := range b.Spans {
					spans++
					for _, tag := range s.Tags {
						if tag.Key == "source" && *tag.VStr != cmp.Or(l.Source, "agent") {
							t.Fatalf("source %q", *tag.VStr)
						}
					}
				}
			}
			if spans != 42 || len(got) < 2 {
				t.Fatalf("%d spans in %d batches, want 42 in several", spans, len(got))
			}
		})
	}
}
