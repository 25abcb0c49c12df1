package roles

import (
	"github.com/katatrace/katatrace/netx"
)

func init() {
	register(Role{
		Name: "jaeger-client-socat-redirector",
		Help: "Guest: carry Jaeger client UDP datagrams over vsock to the host, each whole.",
		New:  func() Command { return &jaegerRedirector{} },
	})
}

// jaegerRedirector replaces the guest's "socat UDP-RECV → VSOCK-CONNECT".
type jaegerRedirector struct {
	From netx.Addr `help:"Where the Jaeger clients send: udp://HOST:PORT, unixgram:///path or fd://N." default:"udp://127.0.0.1:6831"`
	To   netx.Addr `help:"${to_host_help}" default:"vsock://2:6831"`
	guestRelay
}

func (c *jaegerRedirector) Validate() error {
	return c.validate(c.From, c.To, netx.SchemeUDP, netx.SchemeUnixgram, netx.SchemeFD)
}

func (c *jaegerRedirector) Run(rc *RunContext) error {
	pc, err := netx.ListenPacket(c.From)
	if err != nil {
		return listenErr("from", c.From, err)
	}
	return c.run(rc, netx.KindJaeger, c.From, c.To, pc)
}
