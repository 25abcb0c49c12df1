package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	otgrpc "github.com/opentracing-contrib/go-grpc"
	"github.com/opentracing/opentracing-go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/katatrace/katatrace/internal/testutil"
)

// proxied is the shim running the gRPC test agent behind its proxy, its
// spans relayed to Jaeger.
type proxied struct {
	proxySock string
	shim      *testutil.Proc
}

func startProxied(t *testing.T, j *Jaeger, cmdline, service string) *proxied {
	bin, _ := binaries(t)
	dir := testutil.SockDir(t)
	agent := filepath.Join(dir, "grpcagent")
	if out, err := exec.Command("go", "build", "-o", agent, "./grpcagent").CombinedOutput(); err != nil {
		t.Fatalf("build grpcagent: %v\n%s", err, out)
	}
	host := filepath.Join(dir, "h.sock")
	testutil.Start(t, nil, bin, "vsock-to-udp-server", "--from", "unix://"+host, "--to", j.UDPAddr()).WaitLog("listening")
	cmdFile := filepath.Join(dir, "cmdline")
	os.WriteFile(cmdFile, []byte(cmdline), 0o644)
	p := &proxied{proxySock: filepath.Join(dir, "proxy.sock")}
	p.shim = testutil.Start(t, nil, bin, "kata-agent-tracer", "--cmdline-file", cmdFile, "--service-name", service,
		"--from", fmt.Sprintf("udp://127.0.0.1:%d", testutil.FreePort(t, "udp")), "--to", "unix://"+host,
		"--grpc-listen", "unix://"+p.proxySock, "--grpc-upstream", "unix://"+filepath.Join(dir, "agent.sock"),
		"--", agent, filepath.Join(dir, "agent.sock"), service+"-agent")
	p.shim.WaitLog("gRPC proxy serving")
	testutil.Eventually(t, 10*time.Second, "the agent's socket", func() bool {
		_, err := os.Stat(filepath.Join(dir, "agent.sock"))
		return err == nil
	})
	return p
}

func (p *proxied) stop(t *testing.T) {
	p.shim.Signal(syscall.SIGTERM)
	if code := p.shim.Wait(30 * time.Second); code != 0 {
		t.Fatalf("shim exit %d", code)
	}
}

func (p *proxied) client(t *testing.T, opts ...grpc.DialOption) *grpc.ClientConn {
	cc, err := grpc.NewClient("unix://"+p.proxySock, append(opts, grpc.WithTransportCredentials(insecure.NewCredentials()))...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

// TestProxyCollatedInJaeger: runtime span → proxy span → agent span, for
// unary and streaming calls, as Jaeger shows them.
func TestProxyCollatedInJaeger(t *testing.T) {
	j := startJaeger(t)
	p := startProxied(t, j, "agent.trace=collated", "e2e-proxy-collated")
	rt, closer := tracer(t, "e2e-runtime", fmt.Sprintf("127.0.0.1:%d", j.UDP))
	cc := p.client(t, grpc.WithUnaryInterceptor(otgrpc.OpenTracingClientInterceptor(rt)),
		grpc.WithStreamInterceptor(otgrpc.OpenTracingStreamClientInterceptor(rt)))
	root := rt.StartSpan("runtime-create-sandbox")
	ctx := opentracing.ContextWithSpan(context.Background(), root)
	for i := range 3 {
		resp := &wrapperspb.StringValue{}
		if err := cc.Invoke(ctx, "/grpc.AgentService/CreateContainer", wrapperspb.String(fmt.Sprint(i)), resp); err != nil {
			t.Fatal(err)
		}
	}
	cs, err := cc.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true}, "/grpc.AgentService/ReadLogs")
	if err != nil {
		t.Fatal(err)
	}
	cs.SendMsg(wrapperspb.String("c"))
	cs.CloseSend()
	lines := 0
	for cs.RecvMsg(&wrapperspb.StringValue{}) == nil {
		lines++
	}
	root.Finish()
	close(t, closer)
	p.stop(t) // the agent flushes its spans, the shim drains the relay
	if lines != 5 {
		t.Fatalf("%d log lines through the proxy", lines)
	}
	// 1 root + 4 client spans (runtime) + 4 proxy + 4 agent spans.
	spans := j.WaitTrace(t, traceID(root), 13, 30*time.Second)
	byID := map[string]Span{}
	for _, s := range spans {
		byID[s.SpanID] = s
	}
	chains := 0
	for _, s := range spans {
		if s.ProcessID == "" || s.OperationName == "runtime-create-sandbox" {
			continue
		}
		parent, ok := byID[s.Parent()]
		if !ok {
			continue
		}
		grand, ok := byID[parent.Parent()]
		if ok && s.OperationName == parent.OperationName && parent.OperationName == grand.OperationName &&
			byID[grand.Parent()].OperationName == "runtime-create-sandbox" {
			chains++ // agent ← proxy ← runtime client span ← runtime root
		}
	}
	if len(spans) != 13 || chains != 4 {
		t.Fatalf("%d spans, %d runtime → proxy → agent chains; want 13 and 4: %+v", len(spans), chains, spans)
	}
}

// TestProxyDynamicTracingInJaeger: StartTracing, calls, StopTracing make a
// whole trace with its root kata-agent, in Jaeger once StopTracing returns.
func TestProxyDynamicTracingInJaeger(t *testing.T) {
	j := startJaeger(t)
	const service = "e2e-proxy-dynamic"
	p := startProxied(t, j, "console=ttyS0", service)
	cc := p.client(t)
	ctx := context.Background()
	if err := cc.Invoke(ctx, "/grpc.AgentService/StartTracing", &emptypb.Empty{}, &emptypb.Empty{}); err != nil {
		t.Fatalf("StartTracing: %v", err)
	}
	for i := range 4 {
		cc.Invoke(ctx, "/grpc.AgentService/CreateContainer", wrapperspb.String(fmt.Sprint(i)), &wrapperspb.StringValue{})
	}
	if err := cc.Invoke(ctx, "/grpc.AgentService/StopTracing", &emptypb.Empty{}, &emptypb.Empty{}); err != nil {
		t.Fatalf("StopTracing: %v", err)
	}
	var spans []Span
	testutil.Eventually(t, 20*time.Second, "the dynamic trace in Jaeger", func() bool {
		spans = j.tracesOf(t, service)
		return len(spans) >= 5
	})
	var root Span
	for _, s := range spans {
		if s.OperationName == "kata-agent" {
			root = s
		}
	}
	if root.SpanID == "" || root.Tag("trace-mode") != "dynamic" || root.Parent() != "" {
		t.Fatalf("no dynamic root span kata-agent: %+v", spans)
	}
	for _, s := range spans {
		if s.OperationName == "/grpc.AgentService/CreateContainer" && s.Parent() != root.SpanID {
			t.Fatalf("call span not under the root: %+v", s)
		}
	}
	if len(spans) != 5 {
		t.Fatalf("%d spans, want the root and 4 calls", len(spans))
	}
	p.stop(t)
}
