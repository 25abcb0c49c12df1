package grpcproxy

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	otgrpc "github.com/opentracing-contrib/go-grpc"
	"github.com/opentracing/opentracing-go"
	"github.com/uber/jaeger-client-go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/katatrace/katatrace/internal/testagent"
	"github.com/katatrace/katatrace/internal/testutil"
)

func sockDir(t testing.TB) string {
	d, err := os.MkdirTemp("", "ktg")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

func serve(t testing.TB, path string, srv *grpc.Server) {
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(srv.Stop)
}

func dial(t testing.TB, path string, opts ...grpc.DialOption) *grpc.ClientConn {
	cc, err := grpc.NewClient("unix://"+path, append(opts, grpc.WithTransportCredentials(insecure.NewCredentials()))...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

// rig is a test agent, the proxy in front of it, and clients of both.
type rig struct {
	agent          *testagent.Agent
	direct, proxy  *grpc.ClientConn
	agentSpans     *jaeger.InMemoryReporter
	agentTracer    opentracing.Tracer
	ctl            *testController
	runtimeTracer  opentracing.Tracer
	runtimeSpans   *jaeger.InMemoryReporter
	proxiedRuntime *grpc.ClientConn
}

func newTracer(t testing.TB, service string) (opentracing.Tracer, *jaeger.InMemoryReporter) {
	r := jaeger.NewInMemoryReporter()
	tr, closer := jaeger.NewTracer(service, jaeger.NewConstSampler(true), r)
	t.Cleanup(func() { closer.Close() })
	return tr, r
}

func newRig(t testing.TB, collated bool) *rig {
	dir := sockDir(t)
	r := &rig{agent: &testagent.Agent{}}
	r.agentTracer, r.agentSpans = newTracer(t, "agent")
	agentSrv := grpc.NewServer(grpc.UnaryInterceptor(otgrpc.OpenTracingServerInterceptor(r.agentTracer)))
	r.agent.Register(agentSrv)
	serve(t, filepath.Join(dir, "agent.sock"), agentSrv)

	proxyTracer, proxySpans := newTracer(t, "kata-agent")
	r.ctl = &testController{tracer: proxyTracer, spans: proxySpans, collated: collated}
	upstream := dial(t, filepath.Join(dir, "agent.sock"))
	p := New(upstream, r.ctl, slog.New(slog.DiscardHandler))
	serve(t, filepath.Join(dir, "proxy.sock"), grpc.NewServer(p.ServerOptions()...))

	r.direct = dial(t, filepath.Join(dir, "agent.sock"))
	r.proxy = dial(t, filepath.Join(dir, "proxy.sock"))
	r.runtimeTracer, r.runtimeSpans = newTracer(t, "runtime")
	r.proxiedRuntime = dial(t, filepath.Join(dir, "proxy.sock"),
		grpc.WithUnaryInterceptor(otgrpc.OpenTracingClientInterceptor(r.runtimeTracer)),
		grpc.WithStreamInterceptor(otgrpc.OpenTracingStreamClientInterceptor(r.runtimeTracer)))
	return r
}

// testController is a Controller with a static or dynamic trace.
type testController struct {
	mu       sync.Mutex
	tracer   opentracing.Tracer
	spans    *jaeger.InMemoryReporter
	collated bool
	root     opentracing.Span
	stopped  int
}

func (c *testController) Tracer() (opentracing.Tracer, opentracing.SpanContext) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.root == nil {
		return nil, nil
	}
	return c.tracer, c.root.Context()
}
func (c *testController) Collated() bool { return c.collated }
func (c *testController) Active() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.root != nil
}
func (c *testController) Start() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.root != nil {
		return ErrAlreadyEnabled
	}
	c.root = c.tracer.StartSpan("kata-agent")
	return nil
}
func (c *testController) Stop(context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.root == nil {
		return ErrNotEnabled
	}
	c.root.Finish()
	c.root = nil
	c.stopped++
	return nil
}

// result is everything a caller can observe of a unary call.
type result struct {
	resp             string
	code             codes.Code
	msg              string
	header, trailer  metadata.MD
	stream           []string
	streamTrailerSet string
}

func callAll(t *testing.T, cc *grpc.ClientConn) map[string]result {
	out := map[string]result{}
	ctx := metadata.AppendToOutgoingContext(context.Background(), "x-test", "hello")
	for _, m := range []string{"CreateContainer", "StatsContainer"} {
		var r result
		resp := &wrapperspb.StringValue{}
		err := cc.Invoke(ctx, "/grpc.AgentService/"+m, wrapperspb.String("c1"), resp, grpc.Header(&r.header), grpc.Trailer(&r.trailer))
		st, _ := status.FromError(err)
		r.resp, r.code, r.msg = resp.Value, st.Code(), st.Message()
		out[m] = r
	}
	cs, err := cc.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true}, "/grpc.AgentService/ReadLogs")
	if err != nil {
		t.Fatal(err)
	}
	cs.SendMsg(wrapperspb.String("c1"))
	cs.CloseSend()
	var r result
	for {
		m := &wrapperspb.StringValue{}
		if err := cs.RecvMsg(m); err != nil {
			r.code = status.Code(err)
			if err == io.EOF {
				r.code = codes.OK
			}
			break
		}
		r.stream = append(r.stream, m.Value)
	}
	r.streamTrailerSet = fmt.Sprint(cs.Trailer().Get("x-lines"))
	out["ReadLogs"] = r
	return out
}

// TestPassThroughUnchanged: every observable of a call is the same through
// the proxy as directly.
func TestPassThroughUnchanged(t *testing.T) {
	r := newRig(t, false)
	r.ctl.Start()
	direct, proxied := callAll(t, r.direct), callAll(t, r.proxy)
	for m, d := range direct {
		p := proxied[m]
		if d.resp != p.resp || d.code != p.code || d.msg != p.msg || !slices.Equal(d.stream, p.stream) || d.streamTrailerSet != p.streamTrailerSet {
			t.Errorf("%s: direct %+v, proxied %+v", m, d, p)
		}
		for _, k := range []string{"x-echo-header", "x-echo-trailer", "x-fail-trailer"} {
			if !slices.Equal(d.header.Get(k), p.header.Get(k)) || !slices.Equal(d.trailer.Get(k), p.trailer.Get(k)) {
				t.Errorf("%s: metadata %s differs: header %v/%v trailer %v/%v", m, k, d.header.Get(k), p.header.Get(k), d.trailer.Get(k), p.trailer.Get(k))
			}
		}
	}
	if direct["StatsContainer"].code != codes.NotFound || direct["CreateContainer"].resp != "echo:c1" || len(direct["ReadLogs"].stream) != 5 {
		t.Fatalf("the test agent misbehaves: %+v", direct)
	}
	if got := direct["CreateContainer"].header.Get("x-echo-header"); !slices.Equal(got, []string{"[hello]"}) {
		t.Fatalf("request metadata did not reach the agent: %v", got)
	}
}

func TestDeadlineAndCancellationPassThrough(t *testing.T) {
	r := newRig(t, false)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	err := r.proxy.Invoke(ctx, "/grpc.AgentService/WaitProcess", wrapperspb.String("x"), &wrapperspb.StringValue{})
	if status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("through the proxy: %v, want DeadlineExceeded", err)
	}
	testutil.Eventually(t, 5*time.Second, "the deadline reaching the agent", func() bool { return r.agent.Cancelled() == 1 })
	ctx, cancel = context.WithCancel(context.Background())
	go func() {
		// Cancel once the call is at the agent: what must pass through is
		// a cancellation of a call in progress.
		testutil.Eventually(t, 5*time.Second, "the call at the agent", func() bool { return r.agent.Waiting() == 1 })
		cancel()
	}()
	err = r.proxy.Invoke(ctx, "/grpc.AgentService/WaitProcess", wrapperspb.String("x"), &wrapperspb.StringValue{})
	if status.Code(err) != codes.Canceled {
		t.Fatalf("cancelled through the proxy: %v", err)
	}
	testutil.Eventually(t, 5*time.Second, "the cancellation reaching the agent", func() bool { return r.agent.Cancelled() == 2 })
}

// TestCollatedNesting: runtime span → proxy span → agent span.
func TestCollatedNesting(t *testing.T) {
	r := newRig(t, true)
	r.ctl.Start()
	root := r.runtimeTracer.StartSpan("runtime-create")
	ctx := opentracing.ContextWithSpan(context.Background(), root)
	if err := r.proxiedRuntime.Invoke(ctx, "/grpc.AgentService/CreateContainer", wrapperspb.String("c"), &wrapperspb.StringValue{}); err != nil {
		t.Fatal(err)
	}
	root.Finish()
	client := r.runtimeSpans.GetSpans()
	proxy := r.ctl.spans.GetSpans()
	agent := r.agentSpans.GetSpans()
	if len(client) != 2 || len(proxy) != 1 || len(agent) != 1 {
		t.Fatalf("spans: runtime %d, proxy %d, agent %d", len(client), len(proxy), len(agent))
	}
	rpc := client[0].(*jaeger.Span)
	ps := proxy[0].(*jaeger.Span)
	as := agent[0].(*jaeger.Span)
	if ps.OperationName() != "/grpc.AgentService/CreateContainer" || ps.SpanContext().ParentID() != rpc.SpanContext().SpanID() {
		t.Fatalf("proxy span %s is not a child of the runtime's call span", ps)
	}
	if as.SpanContext().ParentID() != ps.SpanContext().SpanID() {
		t.Fatalf("agent span %s is not a child of the proxy span %s", as, ps)
	}
	tags := ps.Tags()
	if tags["grpc.status"] != "OK" || tags["request.bytes"] != 3 || tags["response.bytes"] != 8 {
		t.Fatalf("proxy span tags %v", tags)
	}
}

func TestBadTraceIDNeverFailsTheCall(t *testing.T) {
	r := newRig(t, true)
	r.ctl.Start()
	ctx := metadata.AppendToOutgoingContext(context.Background(), "uber-trace-id", "garbage:::")
	resp := &wrapperspb.StringValue{}
	if err := r.proxy.Invoke(ctx, "/grpc.AgentService/CreateContainer", wrapperspb.String("c"), resp); err != nil || resp.Value != "echo:c" {
		t.Fatalf("call with bad metadata: %v, %q", err, resp.Value)
	}
	if n := len(r.ctl.spans.GetSpans()); n != 0 {
		t.Fatalf("%d proxy spans for an untraceable call", n)
	}
}

func TestStartStopTracing(t *testing.T) {
	for _, implemented := range []bool{false, true} {
		t.Run(fmt.Sprintf("agent implements it: %v", implemented), func(t *testing.T) {
			r := newRig(t, false)
			r.agent.ImplementTracing = implemented
			call := func(m string) error {
				return r.proxy.Invoke(context.Background(), m, &emptypb.Empty{}, &emptypb.Empty{})
			}
			if err := call(StopTracing); status.Code(err) != codes.FailedPrecondition || status.Convert(err).Message() != "tracing not enabled" {
				t.Fatalf("StopTracing without tracing: %v", err)
			}
			if err := call(StartTracing); err != nil {
				t.Fatalf("StartTracing: %v", err)
			}
			if err := call(StartTracing); status.Code(err) != codes.FailedPrecondition || status.Convert(err).Message() != "tracing already enabled" {
				t.Fatalf("second StartTracing: %v", err)
			}
			r.proxy.Invoke(context.Background(), "/grpc.AgentService/CreateContainer", wrapperspb.String("c"), &wrapperspb.StringValue{})
			if err := call(StopTracing); err != nil {
				t.Fatalf("StopTracing: %v", err)
			}
			spans := r.ctl.spans.GetSpans()
			if len(spans) != 2 || r.ctl.stopped != 1 {
				t.Fatalf("%d spans, %d stops; want the call and the root", len(spans), r.ctl.stopped)
			}
			if spans[0].(*jaeger.Span).SpanContext().ParentID() != spans[1].(*jaeger.Span).SpanContext().SpanID() {
				t.Fatal("the call span is not under the dynamic root")
			}
		})
	}
}

// BenchmarkUnary compares a unary call made directly with one made through
// the proxy, over unix sockets, and reports latency percentiles.
func BenchmarkUnary(b *testing.B) {
	r := newRig(b, false)
	r.ctl.Start()
	for name, cc := range map[string]*grpc.ClientConn{"direct": r.direct, "proxy": r.proxy} {
		b.Run(name, func(b *testing.B) {
			lat := make([]time.Duration, 0, b.N)
			in, out := wrapperspb.String("c1"), &wrapperspb.StringValue{}
			for b.Loop() {
				t0 := time.Now()
				if err := cc.Invoke(context.Background(), "/grpc.AgentService/CreateContainer", in, out); err != nil {
					b.Fatal(err)
				}
				lat = append(lat, time.Since(t0))
			}
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
		})
	}
}

// TestEarlyStatusWhileCallerSends: the agent answers a stream with its
// status while the caller is still sending; the proxy's span must count
// what went up without racing the goroutine that still forwards it.
func TestEarlyStatusWhileCallerSends(t *testing.T) {
	r := newRig(t, false)
	if err := r.ctl.Start(); err != nil {
		t.Fatal(err)
	}
	desc := &grpc.StreamDesc{ServerStreams: true, ClientStreams: true}
	for i := range 30 {
		cs, err := r.proxy.NewStream(context.Background(), desc, "/grpc.AgentService/NoSuchMethod")
		if err != nil {
			t.Fatal(err)
		}
		go func() {
			for range 200 {
				if cs.SendMsg(wrapperspb.String("up")) != nil {
					return
				}
			}
			cs.CloseSend()
		}()
		if err := cs.RecvMsg(&wrapperspb.StringValue{}); status.Code(err) != codes.Unimplemented {
			t.Fatalf("call %d: got %v, want the agent's Unimplemented", i, err)
		}
	}
	if err := r.ctl.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := len(r.ctl.spans.GetSpans()); n < 31 {
		t.Errorf("proxy reported %d spans, want 30 calls and the root", n)
	}
}
