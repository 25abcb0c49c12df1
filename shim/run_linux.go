package shim

import (
	"log/slog"
	"net"
	"os"
	"time"

	"github.com/katatrace/katatrace/endpoint"
	"github.com/katatrace/katatrace/guestinit"
	"github.com/katatrace/katatrace/guestrelay"
	"github.com/katatrace/katatrace/systemd"
	"github.com/katatrace/katatrace/tracing"
	"github.com/katatrace/katatrace/wire"
	"github.com/prometheus/client_golang/prometheus"
)

// Config is what the shim runs with: its role's flags, and the seams its
// role gives it (relays, metrics, systemd).
type Config struct {
	CmdlineFile, ServiceName string
	// OwnServiceName names the shim's spans when the agent traces itself.
	OwnServiceName         string
	NoRelay                bool
	From, To               endpoint.Addr
	Journal                bool
	JournalFrom, JournalTo endpoint.Addr
	FlushTimeout           time.Duration
	StopTimeout            time.Duration
	// Shutdown is auto, poweroff, reboot, halt or exit (see ending).
	Shutdown string
	// ExecStop are commands run in order after the flush, instead of the
	// shutdown action.
	ExecStop [][]string
	// Agent is the agent's command.
	Agent                    []string
	GrpcListen, GrpcUpstream endpoint.Addr
	Log                      *slog.Logger

	// StartRelay starts a guest relay from pc to the host at to, as the
	// role's relay flags say.
	StartRelay func(log *slog.Logger, kind wire.Kind, from, to endpoint.Addr, pc net.PacketConn) *guestrelay.Relay
	// ServeMetrics serves the collectors if the role asks for metrics;
	// ready says why the shim is not ready (/readyz), or nil.
	ServeMetrics func(ready func() error, cs ...prometheus.Collector) (stop func(), err error)
	// Notify tells systemd a state; Settle trims the process once it is up.
	Notify func(state string)
	Settle func()
	// ListenErr says which flag's address could not be listened on.
	ListenErr func(flag string, a endpoint.Addr, err error) error
}

// shim is one run of the agent under the shim.
type shim struct{ Config }

// Run runs the agent as the shim: tracing it, relaying its spans, passing
// it signals and reaping its orphans, and ending the VM when it is gone.
// It returns the agent's exit code (128+signal). As PID 1 it never
// returns.
func Run(cfg Config) int {
	c := &shim{Config: cfg}
	return c.run()
}

func (c *shim) run() int {
	log := c.Log
	pid1 := os.Getpid() == 1
	started := time.Now()
	if pid1 {
		guestinit.MountEssentials(log)
		if err := guestinit.LoopbackUp(); err != nil {
			log.Warn("loopback", "err", err)
		}
	} else if err := guestinit.SetSubreaper(); err != nil {
		log.Warn("cannot become the subreaper of the agent's orphans", "err", err)
	}
	// Signals are watched before the agent exists, so none is lost.
	sup := guestinit.NewSupervisor(log, c.StopTimeout)
	defer sup.Stop()

	settings := c.settings(log)
	relays, err := c.startRelays(log)
	if err != nil {
		log.Error("relay not started; the agent runs without it", "err", err)
	}
	if stopMetrics, err := c.ServeMetrics(relays.ready, relays.metrics()); err != nil {
		log.Error("metrics not served; the agent runs without them", "err", err)
	} else {
		defer stopMetrics()
	}
	tr := tracing.NoSession()
	if settings.Mode.Static() {
		tr = c.newSession(log, relays, "static", string(settings.Mode), settings.Parent)
	}
	tr.Boot(started)
	ctl := &shimTracing{shim: c, log: log, relays: relays, collated: settings.Mode == tracing.Collated}
	if settings.Mode.Static() {
		ctl.static = tr
	}
	stopProxy, err := c.startProxy(log, ctl)
	if err != nil {
		log.Error("gRPC proxy not started; the agent's API is reachable only directly", "err", err)
	}

	startSpan := tr.Child("agent-start")
	env := c.agentEnv(tr)
	path, _ := guestinit.LookPath(c.Agent[0], env) // for the log: Start looks it up again
	pid, exited, err := sup.Start(c.Agent, env, []*os.File{os.Stdin, os.Stdout, os.Stderr})
	exit, reason := guestinit.ProcessExit{Status: 127 << 8}, "agent did not start"
	if err != nil {
		log.Error("cannot start the agent", "cmd", c.Agent, "err", err)
		startSpan.SetTag("error", true)
		startSpan.SetTag("error.message", err.Error())
		startSpan.Finish()
	} else {
		startSpan.SetTag("pid", pid)
		startSpan.Finish()
		c.Settle()
		log.Info("agent started", "pid", pid, "cmd", c.Agent, "path", path, "trace", settings.Mode, "pid1", pid1)
		runSpan := tr.Child("agent-run")
		runSpan.SetTag("pid", pid)
		c.Notify(systemd.Ready)
		stopWatchdog := systemd.StartWatchdog(log)
		exit, reason = <-exited, sup.Reason()
		stopWatchdog()
		tagExit(runSpan, exit)
		runSpan.Finish()
		log.Info("agent ended", "pid", pid, "status", exit.String(), "reason", reason)
	}
	c.Notify(systemd.Stopping)
	stopProxy()
	ctl.end()
	action, end := c.ending(pid1, systemd.UnderManager(), settings.Mode.Static())
	return c.shutdown(tr, relays, sup, exit, reason, action, end)
}
