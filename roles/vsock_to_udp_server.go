package roles

import (
	"bufio"
	"fmt"

	"github.com/alecthomas/kong"
	"github.com/katatrace/katatrace/endpoint"
	"github.com/katatrace/katatrace/guestid"
	"github.com/katatrace/katatrace/hostrelay"
	"github.com/katatrace/katatrace/jaegerthrift"
	"github.com/katatrace/katatrace/sink"
	"github.com/katatrace/katatrace/wire"
)

func init() {
	register(Role{
		Name: "vsock-to-udp-server",
		Help: "Host: receive guests' Jaeger datagrams and hand each, whole, to the Jaeger agent's UDP port.",
		New:  func() Command { return &udpServer{} },
	})
}

type udpServer struct {
	From []endpoint.Addr `help:"${from_guest_help}" default:"vsock://any:6831" addr:"listen vsock unix tcp fd"`
	To   sink.Target     `help:"udp://HOST:PORT or unixgram:///path: Jaeger's compact Thrift port, each datagram as it came; http://HOST:14268/api/traces: a Jaeger collector, over HTTP (http:// here is never OTLP); otlp://HOST:4317 (otlps:// with TLS): OTLP over gRPC; otlphttp://HOST:4318[/v1/traces] (otlphttps://): OTLP over HTTP, to an OpenTelemetry Collector, Jaeger v2, Tempo or a vendor; print: each trace as a tree on stdout; jsonl: one JSON object per span on stdout.${otel_help}" default:"udp://127.0.0.1:6831"`
	traceSinkFlags
	RawSplit string `help:"How to find datagram boundaries in a raw (socat) guest stream: thrift walks the emitBatch messages and drops what does not parse; read takes each read as one datagram, as socat does." enum:"thrift,read" default:"thrift"`
	hostRelay

	dest sink.Target // where datagrams go, as Validate found it
}

func (c *udpServer) Validate(kctx *kong.Context) error {
	env, err := readOTEL(!given(kctx, "to") || c.To.Kind == sink.KindOTLP)
	if err != nil {
		return err
	}
	c.dest = c.To
	if !given(kctx, "to") {
		if t, ok, err := envTarget(env); err != nil {
			return err
		} else if ok {
			c.dest = t
		}
	}
	if err := checkFrom(c.From, 6831); err != nil {
		return err
	}
	if err := c.limits(); err != nil {
		return err
	}
	if c.dest.Kind == sink.KindDatagram {
		if err := c.dest.Addr.Require("the Jaeger relay sends to", endpoint.SchemeUDP, endpoint.SchemeUnixgram); err != nil {
			return flagErr("to", err)
		}
	}
	if err := c.otlpOptions.validate(kctx, c.dest, env); err != nil {
		return err
	}
	if err := c.validateCollector(kctx, c.dest); err != nil {
		return err
	}
	if c.QueueBytes < wire.MaxFrameSize {
		return fmt.Errorf("--queue-bytes: %s is too small: a batch can take %d bytes", c.QueueBytes, wire.MaxFrameSize)
	}
	return nil
}

func (c *udpServer) Run(rc *RunContext) error {
	out, err := c.open(rc, c.dest)
	if err != nil {
		return err
	}
	cfg := hostrelay.ServerConfig{Kind: wire.KindJaeger, Sink: out, Logger: rc.Log}
	if c.RawSplit == "thrift" {
		cfg.RawSplit = func(from guestid.ID, unparsed func(int)) bufio.SplitFunc {
			sp := jaegerthrift.NewBatchSplitter(rc.Log.With("peer", from.Conn))
			sp.OnSkip = unparsed
			return sp.Split
		}
	}
	return c.serve(rc, c.From, cfg, c.dest.String())
}
