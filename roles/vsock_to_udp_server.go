package roles

import (
	"bufio"

	"github.com/katatrace/katatrace/netx"
	"github.com/katatrace/katatrace/tracing"
)

func init() {
	register(Role{
		Name: "vsock-to-udp-server",
		Help: "Host: receive guests' Jaeger datagrams and hand each, whole, to the Jaeger agent's UDP port.",
		New:  func() Command { return &udpServer{} },
	})
}

type udpServer struct {
	From     []netx.Addr `help:"${from_guest_help}" default:"vsock://any:6831"`
	To       netx.Addr   `help:"Where Jaeger listens for compact Thrift: udp://HOST:PORT or unixgram:///path." default:"udp://127.0.0.1:6831"`
	RawSplit string      `help:"How to find datagram boundaries in a raw (socat) guest stream: thrift walks the emitBatch messages and drops what does not parse; read takes each read as one datagram, as socat does." enum:"thrift,read" default:"thrift"`
	hostRelay
}

func (c *udpServer) Validate() error {
	if err := checkFrom(c.From); err != nil {
		return err
	}
	if err := c.To.Require("the Jaeger relay sends to", netx.SchemeUDP, netx.SchemeUnixgram); err != nil {
		return flagErr("to", err)
	}
	return nil
}

func (c *udpServer) Run(rc *RunContext) error {
	sink, err := netx.DialPacketSink(c.To)
	if err != nil {
		return err
	}
	defer sink.Close()
	cfg := netx.ServerConfig{Kind: netx.KindJaeger, Sink: sink, Logger: rc.Log}
	if c.RawSplit == "thrift" {
		cfg.RawSplit = func(peer string) bufio.SplitFunc {
			return tracing.NewBatchSplitter(rc.Log.With("peer", peer)).Split
		}
	}
	return c.serve(rc, c.From, netx.NewServer(cfg), c.To.String())
}
