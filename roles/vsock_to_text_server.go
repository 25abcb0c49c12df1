package roles

import (
	"github.com/katatrace/katatrace/endpoint"
	"github.com/katatrace/katatrace/hostrelay"
	"github.com/katatrace/katatrace/sink"
	"github.com/katatrace/katatrace/wire"
)

func init() {
	register(Role{
		Name: "vsock-to-text-server",
		Help: "Host: print guests' journal/syslog messages, one escaped line each, prefixed with the guest.",
		New:  func() Command { return &textServer{} },
	})
}

type textServer struct {
	From []endpoint.Addr `help:"${from_guest_help}" default:"vsock://any:5140" addr:"listen vsock unix tcp fd"`
	To   textSink        `help:"stdout: one line per message, control characters escaped; udp://HOST:PORT or unixgram:///path: each message as one datagram (a host syslog)." default:"stdout"`
	hostRelay
}

func (c *textServer) Validate() error {
	if err := checkFrom(c.From, 5140); err != nil {
		return err
	}
	if err := c.limits(); err != nil {
		return err
	}
	if err := c.To.Require("the text server writes to", endpoint.SchemeStdout, endpoint.SchemeUDP, endpoint.SchemeUnixgram); err != nil {
		return flagErr("to", err)
	}
	return nil
}

func (c *textServer) Run(rc *RunContext) error {
	var out sink.Sink
	if c.To.Scheme == endpoint.SchemeStdout {
		out = sink.NewLineSink(rc.Stdout)
	} else {
		ps, err := sink.DialPacketSink(c.To.Addr)
		if err != nil {
			return err
		}
		out = ps
	}
	return c.serve(rc, c.From, hostrelay.ServerConfig{Kind: wire.KindText, Sink: out, Logger: rc.Log}, c.To.String())
}
