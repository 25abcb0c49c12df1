package shim

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/katatrace/katatrace/endpoint"
	"github.com/katatrace/katatrace/grpcproxy"
	"github.com/katatrace/katatrace/tracing"
	"github.com/opentracing/opentracing-go"
	"github.com/uber/jaeger-client-go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// startProxy serves the agent API on --grpc-listen through the tracing
// proxy; the returned stop drains calls in flight (at most 5 s).
func (c *shim) startProxy(log *slog.Logger, ctl *shimTracing) (stop func(), err error) {
	if c.GrpcListen.Scheme == "" {
		return func() {}, nil
	}
	upstream := c.GrpcUpstream
	cc, err := grpc.NewClient("passthrough:///kata-agent",
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return endpoint.Dial(ctx, upstream) }))
	if err != nil {
		return func() {}, err
	}
	ln, err := endpoint.Listen(c.GrpcListen)
	if err != nil {
		err = c.ListenErr("grpc-listen", c.GrpcListen, err)
		_ = cc.Close()
		return func() {}, err
	}
	p := grpcproxy.New(cc, ctl, log.With("part", "grpc-proxy"))
	srv := grpc.NewServer(p.ServerOptions()...)
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(ln); err != nil {
			log.Error("gRPC proxy stopped", "err", err)
		}
	}()
	log.Info("gRPC proxy serving", "listen", c.GrpcListen.String(), "upstream", upstream.String())
	return func() {
		stopped := make(chan struct{})
		go func() { srv.GracefulStop(); close(stopped) }()
		select {
		case <-stopped:
		case <-time.After(5 * time.Second):
			srv.Stop()
		}
		<-done
		_ = cc.Close()
	}, nil
}

// shimTracing is the proxy's view of the shim's tracing: static (from the
// kernel command line, always on) or dynamic (StartTracing to StopTracing).
type shimTracing struct {
	shim     *shim
	log      *slog.Logger
	relays   *relays
	collated bool
	mu       sync.Mutex
	static   *tracing.Session
	dynamic  *tracing.Session
}

func (t *shimTracing) current() *tracing.Session {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.static != nil {
		return t.static
	}
	return t.dynamic
}

func (t *shimTracing) Tracer() (opentracing.Tracer, opentracing.SpanContext) {
	if cur := t.current(); cur != nil {
		return cur.Tracer()
	}
	return nil, nil
}

func (t *shimTracing) Collated() bool { return t.collated }

func (t *shimTracing) Active() bool { return t.current() != nil }

func (t *shimTracing) Start() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.static != nil || t.dynamic != nil {
		return grpcproxy.ErrAlreadyEnabled
	}
	t.dynamic = t.shim.newSession(t.log, t.relays, "dynamic", "isolated", jaeger.SpanContext{})
	t.log.Info("dynamic tracing started")
	return nil
}

// Stop finishes the dynamic trace and waits for the host to confirm it.
func (t *shimTracing) Stop(ctx context.Context) error {
	t.mu.Lock()
	dyn := t.dynamic
	t.dynamic = nil
	static := t.static != nil
	t.mu.Unlock()
	switch {
	case dyn == nil && static:
		return errors.New("static tracing (agent.trace on the kernel command line) cannot be stopped")
	case dyn == nil:
		return grpcproxy.ErrNotEnabled
	}
	dyn.Finish(nil)
	if t.relays.jaeger == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, t.shim.FlushTimeout)
	defer cancel()
	if err := t.relays.jaeger.Flush(ctx); err != nil {
		return err
	}
	t.log.Info("dynamic tracing stopped; the host confirmed the trace")
	return nil
}

// end finishes a dynamic trace still open when the agent is gone, so its
// spans are flushed with the rest.
func (t *shimTracing) end() {
	t.mu.Lock()
	dyn := t.dynamic
	t.dynamic = nil
	t.mu.Unlock()
	if dyn != nil {
		dyn.Finish(map[string]any{"ended-by": "shutdown"})
	}
}
