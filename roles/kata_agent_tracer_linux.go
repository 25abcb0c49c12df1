package roles

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"time"

	"github.com/katatrace/katatrace/endpoint"
	"github.com/katatrace/katatrace/guestrelay"
	"github.com/katatrace/katatrace/shim"
	"github.com/katatrace/katatrace/wire"
	"github.com/prometheus/client_golang/prometheus"
)

func init() {
	register(Role{
		Name: "kata-agent-tracer",
		Help: "Guest: run the agent under tracing (static or dynamic), relay its traces to the host, and end the VM cleanly, with or without systemd.",
		New:  func() Command { return &agentTracer{} },
	})
}

// agentTracer wraps the agent: kata-agent-tracer [flags] [--] AGENT [ARGS].
type agentTracer struct {
	CmdlineFile  string        `help:"Kernel command line to read agent.trace and agent.trace_parent from." default:"/proc/cmdline"`
	ServiceName  string        `help:"Service name of the shim's spans while they are the agent's only trace (an agent that does not trace itself)." default:"kata-agent"`
	OwnService   string        `name:"own-service-name" help:"Service name (and source tag) of the shim's spans when the agent traces itself (the Kata 1.x agent), so that its trace and the shim's are told apart." default:"kata-agent-tracer"`
	NoRelay      bool          `help:"Run no relay in this process (another one listens on --from); the shim's spans go to --from over UDP."`
	From         endpoint.Addr `help:"Where the agent's tracer sends (its JAEGER_AGENT_HOST and _PORT): udp://HOST:PORT." default:"udp://127.0.0.1:6831" addr:"listen udp"`
	To           endpoint.Addr `help:"${to_host_help}" default:"vsock://2:6831" addr:"dial vsock unix tcp serial"`
	Journal      bool          `help:"Also relay the guest's syslog messages (--journal-from) to the host (--journal-to)."`
	JournalFrom  endpoint.Addr `help:"Where syslog messages arrive, with --journal." default:"unixgram:///dev/log" addr:"listen unixgram udp fd"`
	JournalTo    endpoint.Addr `help:"Where the host's text server listens, with --journal." default:"vsock://2:5140" addr:"dial vsock unix tcp serial"`
	FlushTimeout time.Duration `help:"At shutdown, how long delivering the trace may take in all: reading what was already waiting in the relays' sockets (at most half of it), then waiting for the host to confirm every span; and StopTracing's wait for the host." default:"5s"`
	StopTimeout  time.Duration `help:"After SIGTERM or SIGINT is passed to the agent, how long it has to exit before SIGKILL." default:"10s"`
	Shutdown     string        `help:"What ends the VM once the agent is gone and its trace delivered: poweroff, reboot (Firecracker), halt or exit. As PID 1 by reboot(2), as a systemd service by asking systemd. auto: poweroff as PID 1, and as a systemd service in static tracing (as Kata's ExecStop did); exit otherwise (the runtime ends the VM)." enum:"auto,poweroff,reboot,halt,exit" default:"auto"`
	ExecStop     []string      `help:"Command to run at shutdown, after the flush, instead of the shutdown action; repeatable, run in order, split into words without a shell (as systemd's ExecStop)." sep:"none" placeholder:"CMD"`
	Agent        string        `help:"The agent command as one string, when it cannot be given as arguments (e.g. KATATRACE_AGENT on the kernel command line)." placeholder:"CMD"`
	GrpcListen   endpoint.Addr `help:"Serve the agent API here (e.g. vsock://any:1024), tracing every call, and forward it to the agent (see --grpc-upstream). StartTracing and StopTracing turn dynamic tracing on and off." placeholder:"ADDR" addr:"listen vsock unix tcp fd" addrexample:"vsock://any:1024"`
	GrpcUpstream endpoint.Addr `help:"The agent's own API endpoint, with --grpc-listen (e.g. unix:///run/kata-agent.sock)." placeholder:"ADDR" addr:"dial unix vsock tcp" addrexample:"unix:///run/kata-agent.sock"`
	relayOptions
	metricsOption
	Command []string `arg:"" name:"agent" optional:"" passthrough:"" help:"The agent and its arguments, after the shim's flags (and --); the first argument and everything after it is the agent's, never the shim's."`

	agent []string   // the agent's command, from Command or --agent
	argv  [][]string // ExecStop, split
}

func (c *agentTracer) Validate() error {
	c.agent = c.Command
	switch {
	case len(c.agent) > 0 && c.agent[0] == "--":
		c.agent = c.agent[1:]
	case len(c.agent) > 0 && strings.HasPrefix(c.agent[0], "-"):
		// kong hands an unknown flag to the passthrough argument; before the
		// agent's command it is the shim's, and a typo.
		return fmt.Errorf("unknown flag %s (the agent's own flags go after its command: kata-agent-tracer [flags] -- AGENT [ARGS])", c.agent[0])
	}
	if len(c.agent) == 0 && c.Agent != "" {
		words, err := splitWords(c.Agent)
		if err != nil {
			return flagErr("agent", err)
		}
		c.agent = words
	}
	if len(c.agent) == 0 {
		return errors.New("no agent command: give it as arguments (kata-agent-tracer [flags] -- /usr/bin/kata-agent) or with --agent / KATATRACE_AGENT")
	}
	if err := c.relayOptions.validate(c.From, c.To, endpoint.SchemeUDP); err != nil {
		return err
	}
	if err := c.metricsOption.validate(); err != nil {
		return err
	}
	if c.Journal {
		if err := c.relayOptions.validate(c.JournalFrom, c.JournalTo, endpoint.SchemeUnixgram, endpoint.SchemeUDP, endpoint.SchemeFD); err != nil {
			return fmt.Errorf("journal relay: %w", err)
		}
	}
	if (c.GrpcListen.Scheme == "") != (c.GrpcUpstream.Scheme == "") {
		return errors.New("--grpc-listen and --grpc-upstream go together")
	}
	if c.GrpcListen.Scheme != "" {
		if err := c.GrpcListen.Require("the gRPC proxy listens on", endpoint.SchemeVsock, endpoint.SchemeUnix, endpoint.SchemeTCP, endpoint.SchemeFD); err != nil {
			return flagErr("grpc-listen", err)
		}
		if err := c.GrpcUpstream.Require("the gRPC proxy connects to", endpoint.SchemeUnix, endpoint.SchemeVsock, endpoint.SchemeTCP); err != nil {
			return flagErr("grpc-upstream", err)
		}
	}
	c.argv = nil
	for _, s := range c.ExecStop {
		w, err := splitWords(s)
		if err != nil || len(w) == 0 {
			return flagErr("exec-stop", fmt.Errorf("%q: %v", s, cmpErr(err, "empty command")))
		}
		c.argv = append(c.argv, w)
	}
	return nil
}

func cmpErr(err error, otherwise string) string {
	if err != nil {
		return err.Error()
	}
	return otherwise
}

func (c *agentTracer) Run(rc *RunContext) error {
	// The supervisor passes SIGHUP on to the agent; the shim itself has
	// nothing to reload.
	rc.OnReload(func() []any { return []any{"what", "passed on to the agent, if running"} })
	code := shim.Run(shim.Config{
		CmdlineFile: c.CmdlineFile, ServiceName: c.ServiceName, OwnServiceName: c.OwnService, NoRelay: c.NoRelay,
		From: c.From, To: c.To, Journal: c.Journal, JournalFrom: c.JournalFrom, JournalTo: c.JournalTo,
		FlushTimeout: c.FlushTimeout, StopTimeout: c.StopTimeout, Shutdown: c.Shutdown, ExecStop: c.argv,
		Agent: c.agent, GrpcListen: c.GrpcListen, GrpcUpstream: c.GrpcUpstream,
		Log: rc.Log,
		StartRelay: func(log *slog.Logger, kind wire.Kind, from, to endpoint.Addr, pc net.PacketConn) *guestrelay.Relay {
			return c.start(log, kind, from, to, pc)
		},
		ServeMetrics: func(ready func() error, cs ...prometheus.Collector) (func(), error) {
			return c.serveMetrics(rc, ready, cs...)
		},
		Notify:    func(state string) { notify(rc, state) },
		Settle:    func() { settleGuest(rc) },
		ListenErr: listenErr,
	})
	if code != 0 {
		return &ExitError{Code: code}
	}
	return nil
}
