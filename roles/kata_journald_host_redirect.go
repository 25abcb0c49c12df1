package roles

import (
	"fmt"

	"github.com/katatrace/katatrace/endpoint"
	"github.com/katatrace/katatrace/wire"
)

func init() {
	register(Role{
		Name: "kata-journald-host-redirect",
		Help: "Guest: carry journal/syslog messages over vsock to the host, one message per frame.",
		New:  func() Command { return &journalRedirector{} },
	})
}

// journalRedirector replaces the guest's journal redirect script. Under
// systemd it is syslog.service, so systemd's syslog.socket hands it
// journald's forwarded messages as fd 3; without, it binds a unixgram or
// udp socket itself.
type journalRedirector struct {
	From endpoint.Addr `help:"Where the messages arrive: fd://N (systemd socket activation), unixgram:///path or udp://HOST:PORT." default:"fd://3" addr:"listen fd unixgram udp"`
	To   endpoint.Addr `help:"${to_host_help}" default:"vsock://2:5140" addr:"dial vsock unix tcp serial"`
	guestRelay
}

func (c *journalRedirector) Validate() error {
	return c.validate(c.From, c.To, endpoint.SchemeFD, endpoint.SchemeUnixgram, endpoint.SchemeUDP)
}

func (c *journalRedirector) Run(rc *RunContext) error {
	pc, err := endpoint.ListenPacket(c.From)
	if err != nil && c.From.Scheme == endpoint.SchemeFD {
		return fmt.Errorf("%w: this relay takes its socket from systemd's syslog.socket, as kata-journald-host-redirect.service (installed as syslog.service by make install); without systemd, bind a socket yourself with --from unixgram:///dev/log or --from udp://127.0.0.1:514", err)
	}
	if err != nil {
		return listenErr("from", c.From, err)
	}
	return c.run(rc, wire.KindText, c.From, c.To, pc)
}
