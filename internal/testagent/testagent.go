package testagent

import (
	"context"
	"fmt"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// Agent is a gRPC server with a few methods of the Kata agent API:
// CreateContainer echoes (and returns metadata in header and trailer),
// StatsContainer fails with NotFound, WaitProcess waits for its context to
// end, ReadLogs streams five messages, and StartTracing/StopTracing are
// Unimplemented unless ImplementTracing is set.
type Agent struct {
	ImplementTracing bool
	mu               sync.Mutex
	cancelled        int // WaitProcess calls that saw their context end
	waiting          int // WaitProcess calls in progress
}

// Waiting is how many WaitProcess calls are in progress at the agent.
func (a *Agent) Waiting() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.waiting
}

// Cancelled is how many WaitProcess calls ended by deadline or cancel.
func (a *Agent) Cancelled() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.cancelled
}

type agentAPI interface{}

func (a *Agent) echo(ctx context.Context, in *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	_ = grpc.SetHeader(ctx, metadata.Pairs("x-echo-header", fmt.Sprint(md.Get("x-test"))))
	_ = grpc.SetTrailer(ctx, metadata.Pairs("x-echo-trailer", "t-"+in.Value))
	return wrapperspb.String("echo:" + in.Value), nil
}

func (a *Agent) fail(ctx context.Context, in *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
	_ = grpc.SetTrailer(ctx, metadata.Pairs("x-fail-trailer", "why"))
	return nil, status.Error(codes.NotFound, "no container "+in.Value)
}

func (a *Agent) slow(ctx context.Context, _ *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
	a.mu.Lock()
	a.waiting++
	a.mu.Unlock()
	<-ctx.Done()
	a.mu.Lock()
	a.waiting--
	a.cancelled++
	a.mu.Unlock()
	return nil, status.FromContextError(ctx.Err()).Err()
}

func (a *Agent) tracingCall(ctx context.Context, _ *emptypb.Empty) (*emptypb.Empty, error) {
	if !a.ImplementTracing {
		return nil, status.Error(codes.Unimplemented, "not built with tracing")
	}
	return &emptypb.Empty{}, nil
}

func unary[Req, Resp any](h func(context.Context, *Req) (*Resp, error), name string) grpc.MethodDesc {
	return grpc.MethodDesc{MethodName: name, Handler: func(srv any, ctx context.Context, dec func(any) error, ic grpc.UnaryServerInterceptor) (any, error) {
		in := new(Req)
		if err := dec(in); err != nil {
			return nil, err
		}
		info := &grpc.UnaryServerInfo{Server: srv, FullMethod: "/grpc.AgentService/" + name}
		call := func(ctx context.Context, req any) (any, error) { return h(ctx, req.(*Req)) }
		if ic == nil {
			return call(ctx, in)
		}
		return ic(ctx, in, info, call)
	}}
}

// Register adds the agent's service to srv.
func (a *Agent) Register(srv *grpc.Server) { srv.RegisterService(a.desc(), a) }

func (a *Agent) desc() *grpc.ServiceDesc {
	return &grpc.ServiceDesc{
		ServiceName: "grpc.AgentService",
		HandlerType: (*agentAPI)(nil),
		Methods: []grpc.MethodDesc{
			unary(a.echo, "CreateContainer"), unary(a.fail, "StatsContainer"), unary(a.slow, "WaitProcess"),
			unary(a.tracingCall, "StartTracing"), unary(a.tracingCall, "StopTracing"),
		},
		Streams: []grpc.StreamDesc{{StreamName: "ReadLogs", ServerStreams: true, Handler: func(_ any, ss grpc.ServerStream) error {
			in := &wrapperspb.StringValue{}
			if err := ss.RecvMsg(in); err != nil {
				return err
			}
			for i := range 5 {
				if err := ss.SendMsg(wrapperspb.String(fmt.Sprintf("%s line %d", in.Value, i))); err != nil {
					return err
				}
			}
			ss.SetTrailer(metadata.Pairs("x-lines", "5"))
			return nil
		}}},
	}
}
