package e2e

import (
	"fmt"
	"io"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/katatrace/katatrace/internal/testutil"
	"github.com/opentracing/opentracing-go"
	"github.com/opentracing/opentracing-go/log"
	"github.com/uber/jaeger-client-go"
)

// emitSmall makes a root and 3 children, with tags and logs.
func emitSmall(tr opentracing.Tracer) string {
	root := tr.StartSpan("kata-agent", opentracing.Tag{Key: "root-span", Value: true})
	for i, op := range []string{"boot", "agent-start", "agent-run"} {
		c := tr.StartSpan(op, opentracing.ChildOf(root.Context()), opentracing.Tag{Key: "step", Value: i})
		c.LogFields(log.String("event", op+" done"))
		c.Finish()
	}
	root.Finish()
	return traceID(root)
}

// emitLarge makes spans whose tags are large enough that the client's
// batches are 20 to 64 KB: socat truncates each at 8 KB. blob gives span
// i's tag (growingBlob, or sixKB).
func emitLarge(tr opentracing.Tracer, spans int, blob func(i int) string) string {
	root := tr.StartSpan("large")
	for i := range spans {
		c := tr.StartSpan("chunk", opentracing.ChildOf(root.Context()))
		c.SetTag("blob", blob(i))
		c.SetTag("i", i)
		c.Finish()
	}
	root.Finish()
	return traceID(root)
}

func close(t *testing.T, c io.Closer) {
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
}

func checkSmall(t *testing.T, spans []Span) {
	t.Helper()
	if len(spans) != 4 {
		t.Fatalf("%d spans, want 4", len(spans))
	}
	byOp := map[string]Span{}
	for _, s := range spans {
		byOp[s.OperationName] = s
	}
	root := byOp["kata-agent"]
	if root.SpanID == "" || root.Tag("root-span") != true || root.Parent() != "" {
		t.Fatalf("root span wrong: %+v", root)
	}
	for i, op := range []string{"boot", "agent-start", "agent-run"} {
		s := byOp[op]
		if s.Parent() != root.SpanID {
			t.Errorf("%s: parent %q, want %q", op, s.Parent(), root.SpanID)
		}
		if s.Tag("step") != float64(i) {
			t.Errorf("%s: tag step = %v", op, s.Tag("step"))
		}
		if len(s.Logs) != 1 || len(s.Logs[0].Fields) == 0 || s.Logs[0].Fields[0].Value != op+" done" {
			t.Errorf("%s: logs %+v", op, s.Logs)
		}
	}
}

func TestSmallTrace(t *testing.T) {
	j := startJaeger(t)
	p := startKatatrace(t, j.UDPAddr())
	tr, c := tracer(t, "e2e-small", p.Agent)
	id := emitSmall(tr)
	close(t, c)
	p.Stop(t)
	checkSmall(t, j.WaitTrace(t, id, 4, 20*time.Second))
}

// growingBlob is 5,000 bytes and 100 more per span; sixKB is 6,000.
func growingBlob(i int) string { return strings.Repeat(fmt.Sprintf("%c", 'a'+i%26), 5000+i*100) }
func sixKB(i int) string       { return strings.Repeat(fmt.Sprintf("%c", 'a'+i%26), 6000) }

func checkLarge(t *testing.T, spans []Span, want int, blob func(i int) string) {
	t.Helper()
	if len(spans) != want {
		t.Fatalf("%d spans, want %d", len(spans), want)
	}
	var root string
	for _, s := range spans {
		if s.OperationName == "large" {
			root = s.SpanID
		}
	}
	for _, s := range spans {
		if s.OperationName != "chunk" {
			continue
		}
		i := int(s.Tag("i").(float64))
		if s.Parent() != root || s.Tag("blob") != blob(i) {
			t.Fatalf("chunk %d arrived changed", i)
		}
	}
}

// TestLargeBatches: batches of 20 to 64 KB arrive whole through katatrace,
// and incomplete through the socat pipeline Kata used before.
func TestLargeBatches(t *testing.T) {
	const n = 60
	j := startJaeger(t)

	p := startKatatrace(t, j.UDPAddr())
	tr, c := tracer(t, "e2e-large-katatrace", p.Agent)
	id := emitLarge(tr, n, growingBlob)
	close(t, c)
	p.Stop(t)
	checkLarge(t, j.WaitTrace(t, id, n+1, 30*time.Second), n+1, growingBlob)
	if !strings.Contains(p.Guest.Stderr.String(), "the host confirmed every datagram") {
		t.Error("guest relay drain not confirmed")
	}

	agent := socatPair(t, j.UDP)
	tr, c = tracer(t, "e2e-large-socat", agent)
	id = emitLarge(tr, n, growingBlob)
	close(t, c)
	// A small trace after the large one, through the same socat pipeline:
	// it proves the path delivers, and once it is in Jaeger, whatever of the
	// large trace survived (sent before it, in order) is in too.
	tr, c = tracer(t, "e2e-large-socat-control", agent)
	control := tr.StartSpan("control")
	control.Finish()
	close(t, c)
	if got := j.WaitTrace(t, traceID(control), 1, 30*time.Second); len(got) != 1 {
		t.Fatalf("the socat pipeline delivered %d of 1 small span: it does not work at all here", len(got))
	}
	got := j.Trace(t, id)
	t.Logf("through socat: %d of %d spans reached Jaeger (the small control trace did)", len(got), n+1)
	if len(got) >= n+1 {
		t.Fatalf("socat delivered all %d spans; the batches were not large enough to show its truncation", len(got))
	}
}

// Test10000Spans: 4 concurrent tracers, 2,500 spans each, all of which
// must reach Jaeger through katatrace. The same load sent straight to
// Jaeger's UDP port, in the same run, is the baseline of the rate logged.
func Test10000Spans(t *testing.T) {
	const tracers, each = 4, 2500
	j := startJaeger(t)
	_, direct := emitLoad(t, j, fmt.Sprintf("127.0.0.1:%d", j.UDP), "e2e-direct", tracers, each)
	took := map[string]time.Duration{}
	for _, to := range []string{j.UDPAddr(), j.OTLPGRPCAddr(), j.OTLPHTTPAddr()} {
		p := startKatatrace(t, to)
		service := "e2e-load-" + strings.Split(to, ":")[0]
		var ids []string
		ids, took[to] = emitLoad(t, j, p.Agent, service, tracers, each)
		for i, id := range ids {
			if spans := j.WaitTrace(t, id, each, 60*time.Second); len(spans) != each {
				t.Fatalf("%s, tracer %d: %d of %d spans in Jaeger", to, i, len(spans), each)
			}
		}
		p.Stop(t)
	}
	rate := func(d time.Duration) float64 { return float64(tracers*each) / d.Seconds() }
	t.Logf("%d spans into Jaeger, spans/s: straight to its UDP port %.0f; through katatrace to UDP %.0f (%.2f of straight), to OTLP/gRPC %.0f (%.2f), to OTLP/HTTP %.0f (%.2f)",
		tracers*each, rate(direct), rate(took[j.UDPAddr()]), direct.Seconds()/took[j.UDPAddr()].Seconds(),
		rate(took[j.OTLPGRPCAddr()]), direct.Seconds()/took[j.OTLPGRPCAddr()].Seconds(),
		rate(took[j.OTLPHTTPAddr()]), direct.Seconds()/took[j.OTLPHTTPAddr()].Seconds())
}

// emitLoad sends tracers × each spans to agent and returns the trace ids
// and the time until every span of them was in Jaeger (or 60 s had passed).
func emitLoad(t *testing.T, j *Jaeger, agent, service string, tracers, each int) ([]string, time.Duration) {
	ids := make([]string, tracers)
	var wg sync.WaitGroup
	start := time.Now()
	for i := range tracers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tr, c := tracer(t, fmt.Sprintf("%s-%d", service, i), agent)
			root := tr.StartSpan("load")
			for k := range each - 1 {
				tr.StartSpan("op", opentracing.ChildOf(root.Context()), opentracing.Tag{Key: "k", Value: k}).Finish()
			}
			root.Finish()
			ids[i] = traceID(root)
			close(t, c)
		}()
	}
	wg.Wait()
	for _, id := range ids {
		j.WaitTrace(t, id, each, 60*time.Second)
	}
	return ids, time.Since(start)
}

// TestCollectorHTTP: the host relay posts to Jaeger's collector endpoint.
func TestCollectorHTTP(t *testing.T) {
	j := startJaeger(t)
	p := startKatatrace(t, j.CollectorURL())
	tr, c := tracer(t, "e2e-http", p.Agent)
	small := emitSmall(tr)
	large := emitLarge(tr, 30, growingBlob)
	close(t, c)
	p.Stop(t)
	checkSmall(t, j.WaitTrace(t, small, 4, 20*time.Second))
	checkLarge(t, j.WaitTrace(t, large, 31, 20*time.Second), 31, growingBlob)
}

// TestOTLP: the host relay sends over OTLP, gRPC and HTTP, to Jaeger v2's
// OTLP receivers: 41 spans with 6 KB tags and a small trace arrive whole,
// linked, with their tags, service name and the guest's identity.
func TestOTLP(t *testing.T) {
	j := startJaeger(t)
	for _, to := range []string{j.OTLPGRPCAddr(), j.OTLPHTTPAddr()} {
		t.Run(strings.Split(to, ":")[0], func(t *testing.T) {
			p := startKatatrace(t, to)
			service := "e2e-" + strings.Split(to, ":")[0]
			tr, c := tracer(t, service, p.Agent)
			small := emitSmall(tr)
			large := emitLarge(tr, 40, sixKB)
			close(t, c)
			p.Stop(t)
			checkSmall(t, j.WaitTrace(t, small, 4, 20*time.Second))
			spans := j.WaitTrace(t, large, 41, 20*time.Second)
			checkLarge(t, spans, 41, sixKB)
			proc := spans[0].Process
			if proc.ServiceName != service || !strings.HasPrefix(fmt.Sprint(proc.Tag("katatrace.guest")), "unix://") {
				t.Fatalf("process %+v: want service %s and the guest's socket", proc, service)
			}
			if !strings.Contains(p.Guest.Stderr.String(), "the host confirmed every datagram") {
				t.Error("guest relay drain not confirmed")
			}
		})
	}
}

// TestSocatGuestRepaired: an old guest image still runs socat; its stream
// has no datagram boundaries. The host relay walks the Thrift messages and
// Jaeger gets every span of batches up to 8 KB.
func TestSocatGuestRepaired(t *testing.T) {
	socat, err := exec.LookPath("socat")
	if err != nil {
		t.Skip("socat is not installed (apt-get install socat; .ci/run installs it)")
	}
	j := startJaeger(t)
	bin, _ := binaries(t)
	sock := filepath.Join(testutil.SockDir(t), "kata.hvsock_6831")
	host := testutil.Start(t, nil, bin, "vsock-to-udp-server", "--from", "unix://"+sock, "--to", j.UDPAddr())
	host.WaitLog("listening")
	port := testutil.FreePort(t, "udp")
	testutil.Start(t, nil, socat, "-u", fmt.Sprintf("UDP-RECV:%d,bind=127.0.0.1", port), "UNIX-CONNECT:"+sock)
	testutil.WaitUDPBound(t, port)

	// Batches of at most 8000 bytes: socat's 8192-byte reads keep them whole.
	transport, err := jaeger.NewUDPTransport(fmt.Sprintf("127.0.0.1:%d", port), 8000)
	if err != nil {
		t.Fatal(err)
	}
	tr, c := jaeger.NewTracer("e2e-socat-guest", jaeger.NewConstSampler(true),
		jaeger.NewRemoteReporter(transport, jaeger.ReporterOptions.QueueSize(100000)))
	const n = 3000
	root := tr.StartSpan("root")
	for i := range n - 1 {
		s := tr.StartSpan("op", opentracing.ChildOf(root.Context()), opentracing.Tag{Key: "i", Value: i})
		s.LogFields(log.String("msg", strings.Repeat("m", i%200)))
		s.Finish()
		if i%40 == 0 {
			// socat's own UDP socket has the default buffer: pace the client
			// so that this tests stream repair, not socat's reading speed.
			time.Sleep(3 * time.Millisecond)
		}
	}
	root.Finish()
	close(t, c)
	spans := j.WaitTrace(t, traceID(root), n, 30*time.Second)
	if len(spans) != n {
		t.Fatalf("%d of %d spans reached Jaeger through the socat guest", len(spans), n)
	}
	if !strings.Contains(host.Stderr.String(), "framing=raw") {
		t.Fatal("the host did not see a raw peer")
	}
}
