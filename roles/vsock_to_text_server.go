package roles

import (
	"github.com/katatrace/katatrace/netx"
)

func init() {
	register(Role{
		Name: "vsock-to-text-server",
		Help: "Host: print guests' journal/syslog messages, one escaped line each, prefixed with the guest.",
		New:  func() Command { return &textServer{} },
	})
}

type textServer struct {
	From []netx.Addr `help:"${from_guest_help}" default:"vsock://any:5140"`
	To   textSink    `help:"stdout: one line per message, control characters escaped; udp://HOST:PORT or unixgram:///path: each message as one datagram (a host syslog)." default:"stdout"`
	hostRelay
}

func (c *textServer) Validate() error {
	if err := checkFrom(c.From); err != nil {
		return err
	}
	if err := c.limits(); err != nil {
		return err
	}
	if err := c.To.Require("the text server writes to", netx.SchemeStdout, netx.SchemeUDP, netx.SchemeUnixgram); err != nil {
		return flagErr("to", err)
	}
	return nil
}

func (c *textServer) Run(rc *RunContext) error {
	var sink netx.Sink
	if c.To.Scheme == netx.SchemeStdout {
		sink = netx.NewLineSink(rc.Stdout)
	} else {
		ps, err := netx.DialPacketSink(c.To.Addr)
		if err != nil {
			return err
		}
		sink = ps
	}
	return c.serve(rc, c.From, netx.ServerConfig{Kind: netx.KindText, Sink: sink, Logger: rc.Log}, c.To.String())
}
