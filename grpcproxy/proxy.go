package grpcproxy

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"sync/atomic"

	"github.com/opentracing/opentracing-go"
	"github.com/opentracing/opentracing-go/ext"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// The agent API's tracing methods.
const (
	StartTracing = "/grpc.AgentService/StartTracing"
	StopTracing  = "/grpc.AgentService/StopTracing"
)

// Errors a Controller returns, answered as the original agent did.
var (
	ErrAlreadyEnabled = errors.New("tracing already enabled")
	ErrNotEnabled     = errors.New("tracing not enabled")
)

// Controller is the tracing state the proxy works with.
type Controller interface {
	// Tracer returns the tracer for a call's span and the span it is a
	// child of when the caller sends none; a nil tracer means untraced.
	Tracer() (opentracing.Tracer, opentracing.SpanContext)
	// Collated reports whether a caller's uber-trace-id parents the span.
	Collated() bool
	// Active reports whether a trace is being recorded.
	Active() bool
	// Start begins a dynamic trace (ErrAlreadyEnabled if one is on).
	Start() error
	// Stop finishes it and flushes it to the host (ErrNotEnabled if off).
	Stop(ctx context.Context) error
}

// Proxy forwards calls to an upstream connection.
type Proxy struct {
	upstream *grpc.ClientConn
	ctl      Controller
	log      *slog.Logger
}

// New returns a proxy to upstream.
func New(upstream *grpc.ClientConn, ctl Controller, log *slog.Logger) *Proxy {
	return &Proxy{upstream: upstream, ctl: ctl, log: log}
}

// ServerOptions are what a grpc.Server needs to serve the proxy: every
// method goes to it, undecoded.
func (p *Proxy) ServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{grpc.UnknownServiceHandler(p.handle), grpc.ForceServerCodec(rawCodec{})}
}

// callOptions are what the upstream ClientConn needs for raw frames.
func callOptions() []grpc.CallOption { return []grpc.CallOption{grpc.ForceCodec(rawCodec{})} }

var streamDesc = &grpc.StreamDesc{ServerStreams: true, ClientStreams: true}

func (p *Proxy) handle(_ any, ss grpc.ServerStream) error {
	method, ok := grpc.MethodFromServerStream(ss)
	if !ok {
		return status.Error(codes.Internal, "grpcproxy: no method in stream")
	}
	switch method {
	case StartTracing, StopTracing:
		return p.tracingCall(method, ss)
	}
	ctx := ss.Context()
	in, _ := metadata.FromIncomingContext(ctx)
	out := forwardable(in)
	span := p.startSpan(method, in)
	if span != nil {
		_ = span.Tracer().Inject(span.Context(), opentracing.TextMap, mdCarrier(out))
	}
	c := &call{ss: ss}
	err := c.forward(metadata.NewOutgoingContext(ctx, out), p.upstream, method)
	if span != nil {
		st, _ := status.FromError(err)
		span.SetTag("grpc.status", st.Code().String())
		span.SetTag("request.bytes", int(c.inBytes.Load()))
		span.SetTag("response.bytes", c.outBytes)
		span.SetTag("request.messages", int(c.inMsgs.Load()))
		span.SetTag("response.messages", c.outMsgs)
		if st.Code() != codes.OK {
			ext.Error.Set(span, true)
			span.SetTag("grpc.message", st.Message())
		}
		span.Finish()
	}
	return err
}

// forwardable is the caller's metadata less what gRPC sets itself.
func forwardable(in metadata.MD) metadata.MD {
	out := in.Copy()
	for k := range out {
		if strings.HasPrefix(k, ":") || k == "content-type" || k == "user-agent" || k == "te" || strings.HasPrefix(k, "grpc-") {
			delete(out, k)
		}
	}
	return out
}

// startSpan starts the call's span, or returns nil when untraced. A
// malformed uber-trace-id is logged and leaves the call untraced: it never
// fails the call.
func (p *Proxy) startSpan(method string, in metadata.MD) opentracing.Span {
	tr, parent := p.ctl.Tracer()
	if tr == nil {
		return nil
	}
	if p.ctl.Collated() && len(in.Get("uber-trace-id")) > 0 {
		sc, err := tr.Extract(opentracing.TextMap, mdCarrier(in))
		if err != nil {
			p.log.Warn("bad uber-trace-id from the caller; call not traced", "method", method,
				"uber-trace-id", in.Get("uber-trace-id")[0], "err", err)
			return nil
		}
		parent = sc
	}
	opts := []opentracing.StartSpanOption{ext.SpanKindRPCServer, opentracing.Tag{Key: "component", Value: "katatrace-grpc-proxy"}}
	if parent != nil {
		opts = append(opts, opentracing.ChildOf(parent))
	}
	return tr.StartSpan(method, opts...)
}

// call is one proxied stream and what passed through it.
type call struct {
	ss grpc.ServerStream
	// The caller's side is counted by forward's goroutine, which can still
	// run when forward returns on the agent's status: atomics.
	inBytes, inMsgs   atomic.Int64
	outBytes, outMsgs int
}

// forward runs the call upstream: caller's messages up, agent's messages,
// headers and trailers down; returns the agent's status.
func (c *call) forward(ctx context.Context, upstream *grpc.ClientConn, method string) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	cs, err := upstream.NewStream(ctx, streamDesc, method, callOptions()...)
	if err != nil {
		return err
	}
	upErr := make(chan error, 1)
	go func() { upErr <- c.up(cs) }()
	downErr := c.down(cs)
	c.ss.SetTrailer(cs.Trailer())
	if downErr != io.EOF {
		return downErr // the agent's status, or the caller gone
	}
	// The agent answered OK; the caller's side must be done too.
	if err := <-upErr; err != nil && err != io.EOF {
		return err
	}
	return nil
}

func (c *call) up(cs grpc.ClientStream) error {
	f := &frame{}
	for {
		if err := c.ss.RecvMsg(f); err != nil {
			if err == io.EOF {
				return cs.CloseSend()
			}
			return err
		}
		c.inMsgs.Add(1)
		c.inBytes.Add(int64(len(f.data)))
		if err := cs.SendMsg(f); err != nil {
			return err
		}
	}
}

func (c *call) down(cs grpc.ClientStream) error {
	f := &frame{}
	headerSent := false
	for {
		err := cs.RecvMsg(f)
		if !headerSent {
			if h, herr := cs.Header(); herr == nil && len(h) > 0 {
				if err == nil {
					_ = c.ss.SendHeader(h)
				} else {
					_ = c.ss.SetHeader(h)
				}
			}
			headerSent = true
		}
		if err != nil {
			return err
		}
		c.outMsgs++
		c.outBytes += len(f.data)
		if err := c.ss.SendMsg(f); err != nil {
			return err
		}
	}
}

// tracingCall answers StartTracing and StopTracing: the proxy's own
// tracing changes, and the call goes on to the agent too (an agent that
// does not implement it is no error).
func (p *Proxy) tracingCall(method string, ss grpc.ServerStream) error {
	req := &frame{}
	if err := ss.RecvMsg(req); err != nil {
		return err
	}
	switch {
	case method == StartTracing:
		if err := p.ctl.Start(); err != nil {
			return controllerStatus(err)
		}
	case !p.ctl.Active():
		return controllerStatus(ErrNotEnabled)
	}
	ctx := ss.Context()
	in, _ := metadata.FromIncomingContext(ctx)
	resp := &frame{}
	var header, trailer metadata.MD
	err := p.upstream.Invoke(metadata.NewOutgoingContext(ctx, forwardable(in)), method, req, resp,
		append(callOptions(), grpc.Header(&header), grpc.Trailer(&trailer))...)
	if status.Code(err) == codes.Unimplemented {
		p.log.Debug("the agent does not implement "+method+"; the proxy handles it alone", "method", method)
		err, resp.data = nil, nil // google.protobuf.Empty
	}
	if err != nil {
		p.log.Warn("the agent failed "+method, "err", err)
	}
	// StopTracing ends the trace even when the agent failed it; a
	// StartTracing the agent failed is undone.
	if method == StopTracing || err != nil {
		if serr := p.ctl.Stop(ctx); serr != nil && err == nil {
			return controllerStatus(serr)
		}
	}
	if err != nil {
		return err
	}
	_ = ss.SetHeader(header)
	ss.SetTrailer(trailer)
	return ss.SendMsg(resp)
}

func controllerStatus(err error) error {
	switch {
	case errors.Is(err, ErrAlreadyEnabled), errors.Is(err, ErrNotEnabled):
		return status.Error(codes.FailedPrecondition, err.Error())
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, err.Error())
	}
	return status.Error(codes.Internal, err.Error())
}

// mdCarrier lets opentracing read and write gRPC metadata.
type mdCarrier metadata.MD

func (m mdCarrier) Set(k, v string) { metadata.MD(m).Set(k, v) }

func (m mdCarrier) ForeachKey(handler func(k, v string) error) error {
	for k, vs := range m {
		for _, v := range vs {
			if err := handler(k, v); err != nil {
				return err
			}
		}
	}
	return nil
}
