package jaegertest

import (
	"strings"
	"testing"
	"time"

	"github.com/katatrace/katatrace/internal/testutil"
	"github.com/opentracing/opentracing-go"
	"github.com/opentracing/opentracing-go/log"
	jaegercfg "github.com/uber/jaeger-client-go"
)

// Capture runs a real jaeger-client-go tracer reporting over UDP to a test
// socket and returns the datagrams it sent.
func Capture(t testing.TB, service string, emit func(opentracing.Tracer)) [][]byte {
	t.Helper()
	sink := testutil.NewUDPSink(t)
	tr, err := jaegercfg.NewUDPTransport(strings.TrimPrefix(sink.Addr(), "udp://"), 0)
	if err != nil {
		t.Fatal(err)
	}
	tracer, closer := jaegercfg.NewTracer(service, jaegercfg.NewConstSampler(true),
		jaegercfg.NewRemoteReporter(tr, jaegercfg.ReporterOptions.QueueSize(100000)),
		jaegercfg.TracerOptions.MaxTagValueLength(65000))
	emit(tracer)
	closer.Close() // flushes
	return sink.Quiet(200 * time.Millisecond)
}

// SmallTrace is a root and three children with tags and logs.
func SmallTrace(tr opentracing.Tracer) {
	root := tr.StartSpan("root", opentracing.Tag{Key: "root-span", Value: true})
	for i, op := range []string{"boot", "agent-start", "agent-run"} {
		c := tr.StartSpan(op, opentracing.ChildOf(root.Context()), opentracing.Tag{Key: "i", Value: i})
		c.LogFields(log.String("event", op+" done"), log.Int("n", i))
		c.Finish()
	}
	root.Finish()
}

// BigTrace makes spans with large tags, so that the client's batches grow
// to tens of kilobytes.
func BigTrace(tr opentracing.Tracer) {
	root := tr.StartSpan("big")
	for i := range 40 {
		c := tr.StartSpan("child", opentracing.ChildOf(root.Context()))
		c.SetTag("payload", strings.Repeat(string(rune('a'+i%26)), 1500+i*40))
		c.Finish()
	}
	root.Finish()
}
