package roles

import (
	"github.com/katatrace/katatrace/endpoint"
	"github.com/katatrace/katatrace/wire"
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
	From endpoint.Addr `help:"Where the Jaeger clients send: udp://HOST:PORT, unixgram:///path or fd://N." default:"udp://127.0.0.1:6831" addr:"listen udp unixgram fd"`
	To   endpoint.Addr `help:"${to_host_help}" default:"vsock://2:6831" addr:"dial vsock unix tcp serial"`
	guestRelay
}

func (c *jaegerRedirector) Validate() error {
	return c.validate(c.From, c.To, endpoint.SchemeUDP, endpoint.SchemeUnixgram, endpoint.SchemeFD)
}

func (c *jaegerRedirector) Run(rc *RunContext) error {
	pc, err := endpoint.ListenPacket(c.From)
	if err != nil {
		return listenErr("from", c.From, err)
	}
	return c.run(rc, wire.KindJaeger, c.From, c.To, pc)
}
