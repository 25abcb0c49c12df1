package roles

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/katatrace/katatrace/netx"
	"github.com/katatrace/katatrace/systemd"
	"github.com/katatrace/katatrace/tracing"
	"github.com/opentracing/opentracing-go"
	"github.com/uber/jaeger-client-go"
	"golang.org/x/sys/unix"
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
	ServiceName  string        `help:"Service name of the shim's spans." default:"kata-agent"`
	NoRelay      bool          `help:"Run no relay in this process (another one listens on --from); the shim's spans go to --from over UDP."`
	From         netx.Addr     `help:"Where the agent's tracer sends (its JAEGER_AGENT_HOST and _PORT): udp://HOST:PORT." default:"udp://127.0.0.1:6831"`
	To           netx.Addr     `help:"${to_host_help}" default:"vsock://2:6831"`
	Journal      bool          `help:"Also relay the guest's syslog messages (--journal-from) to the host (--journal-to)."`
	JournalFrom  netx.Addr     `help:"Where syslog messages arrive, with --journal." default:"unixgram:///dev/log"`
	JournalTo    netx.Addr     `help:"Where the host's text server listens, with --journal." default:"vsock://2:5140"`
	FlushTimeout time.Duration `help:"At shutdown, how long to wait for the host to confirm every span." default:"5s"`
	StopTimeout  time.Duration `help:"After SIGTERM or SIGINT is passed to the agent, how long it has to exit before SIGKILL." default:"10s"`
	Shutdown     string        `help:"What ends the VM once the agent is gone and its trace delivered: poweroff, reboot (Firecracker), halt or exit. As PID 1 by reboot(2), as a systemd service by asking systemd. auto: poweroff as PID 1, and as a systemd service in static tracing (as Kata's ExecStop did); exit otherwise (the runtime ends the VM)." enum:"auto,poweroff,reboot,halt,exit" default:"auto"`
	ExecStop     []string      `help:"Command to run at shutdown, after the flush, instead of the shutdown action; repeatable, run in order, split into words without a shell (as systemd's ExecStop)." sep:"none" placeholder:"CMD"`
	Agent        string        `help:"The agent command as one string, when it cannot be given as arguments (e.g. KATATRACE_AGENT on the kernel command line)." placeholder:"CMD"`
	GrpcListen   netx.Addr     `help:"Serve the agent API here (e.g. vsock://any:1024), tracing every call, and forward it to the agent (see --grpc-upstream). StartTracing and StopTracing turn dynamic tracing on and off." placeholder:"ADDR"`
	GrpcUpstream netx.Addr     `help:"The agent's own API endpoint, with --grpc-listen (e.g. unix:///run/kata-agent.sock)." placeholder:"ADDR"`
	relayOptions
	Command []string `arg:"" optional:"" passthrough:"" help:"The agent and its arguments; the first argument and everything after it is the agent's, never the shim's."`

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
	if err := c.relayOptions.validate(c.From, c.To, netx.SchemeUDP); err != nil {
		return err
	}
	if c.Journal {
		if err := c.relayOptions.validate(c.JournalFrom, c.JournalTo, netx.SchemeUnixgram, netx.SchemeUDP, netx.SchemeFD); err != nil {
			return fmt.Errorf("journal relay: %w", err)
		}
	}
	if (c.GrpcListen.Scheme == "") != (c.GrpcUpstream.Scheme == "") {
		return errors.New("--grpc-listen and --grpc-upstream go together")
	}
	if c.GrpcListen.Scheme != "" {
		if err := c.GrpcListen.Require("the gRPC proxy listens on", netx.SchemeVsock, netx.SchemeUnix, netx.SchemeTCP, netx.SchemeFD); err != nil {
			return flagErr("grpc-listen", err)
		}
		if err := c.GrpcUpstream.Require("the gRPC proxy connects to", netx.SchemeUnix, netx.SchemeVsock, netx.SchemeTCP); err != nil {
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

// forwarded are the signals the agent gets when the shim does.
var forwarded = []os.Signal{unix.SIGTERM, unix.SIGINT, unix.SIGHUP, unix.SIGQUIT, unix.SIGUSR1, unix.SIGUSR2}

func (c *agentTracer) Run(rc *RunContext) error {
	log := rc.Log
	pid1 := os.Getpid() == 1
	started := time.Now()
	if pid1 {
		systemd.MountEssentials(log)
		if err := systemd.LoopbackUp(); err != nil {
			log.Warn("loopback", "err", err)
		}
	} else if err := systemd.SetSubreaper(); err != nil {
		log.Warn("cannot become the subreaper of the agent's orphans", "err", err)
	}
	// Watch signals before the agent exists, so none is lost.
	signal.Ignore(unix.SIGTTIN, unix.SIGTTOU, unix.SIGTSTP)
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs, forwarded...)
	defer signal.Stop(sigs)
	reaper := systemd.NewReaper(log)
	defer reaper.Stop()

	settings := c.settings(log)
	relays, err := c.startRelays(log)
	if err != nil {
		log.Error("relay not started; the agent runs without it", "err", err)
	}
	tr := c.startTracer(log, settings, relays)
	tr.boot(started)
	ctl := &shimTracing{shim: c, log: log, relays: relays, collated: settings.Mode == tracing.Collated}
	if settings.Mode.Static() {
		ctl.static = tr
	}
	stopProxy, err := c.startProxy(log, ctl)
	if err != nil {
		log.Error("gRPC proxy not started; the agent's API is reachable only directly", "err", err)
	}

	startSpan := tr.child("agent-start")
	pid, exited, err := reaper.Start(c.agent, c.agentEnv(tr), []*os.File{os.Stdin, os.Stdout, os.Stderr})
	var exit systemd.ProcessExit
	reason := "agent exited"
	if err != nil {
		log.Error("cannot start the agent", "cmd", c.agent, "err", err)
		startSpan.SetTag("error", true)
		startSpan.SetTag("error.message", err.Error())
		exit.Status = unix.WaitStatus(127 << 8)
		reason = "agent did not start"
	} else {
		startSpan.SetTag("pid", pid)
		trimCode(rc)
		log.Info("agent started", "pid", pid, "cmd", c.agent, "trace", settings.Mode, "pid1", pid1)
	}
	startSpan.Finish()
	if err == nil {
		runSpan := tr.child("agent-run")
		runSpan.SetTag("pid", pid)
		notify(rc, systemd.Ready)
		stopWatchdog := watchdog(rc)
		exit, reason = c.supervise(rc, pid, exited, sigs)
		stopWatchdog()
		tagExit(runSpan, exit)
		runSpan.Finish()
		log.Info("agent ended", "pid", pid, "status", exit.String(), "reason", reason)
	}
	notify(rc, systemd.Stopping)
	stopProxy()
	ctl.end()
	return c.shutdown(rc, tr, relays, reaper, exit, reason, c.action(pid1, systemd.UnderManager(), settings.Mode.Static()))
}

// action is how the VM ends once the trace is delivered. Under systemd,
// static tracing ends it as Kata's ExecStop did; dynamic and untraced runs
// leave that to the runtime, unless --shutdown says otherwise.
func (c *agentTracer) action(pid1, managed, static bool) systemd.Action {
	switch {
	case c.Shutdown != "auto":
		return systemd.Action(c.Shutdown)
	case pid1 || managed && static:
		return systemd.PowerOff
	}
	return systemd.Exit
}

// supervise waits for the agent, passing on signals; SIGTERM and SIGINT
// give it --stop-timeout to exit before SIGKILL.
func (c *agentTracer) supervise(rc *RunContext, pid int, exited <-chan systemd.ProcessExit, sigs <-chan os.Signal) (systemd.ProcessExit, string) {
	reason := "agent exited"
	var kill <-chan time.Time
	for {
		select {
		case e := <-exited:
			return e, reason
		case s := <-sigs:
			rc.Log.Info("passing signal to the agent", "signal", s.String(), "pid", pid)
			_ = unix.Kill(pid, s.(syscall.Signal))
			if (s == unix.SIGTERM || s == unix.SIGINT) && kill == nil {
				reason = "stopped by " + s.String()
				kill = time.After(c.StopTimeout)
			}
		case <-kill:
			rc.Log.Warn("agent still running after --stop-timeout; killing it", "pid", pid, "stop_timeout", c.StopTimeout.String())
			_ = unix.Kill(pid, unix.SIGKILL)
		}
	}
}

func tagExit(s opentracing.Span, e systemd.ProcessExit) {
	if e.Status.Signaled() {
		s.SetTag("signal", e.Status.Signal().String())
	} else {
		s.SetTag("exit-code", e.Status.ExitStatus())
	}
	if e.Code() != 0 {
		s.SetTag("error", true)
	}
	s.SetTag("cpu-user-ms", time.Duration(e.Rusage.Utime.Nano()).Milliseconds())
	s.SetTag("cpu-system-ms", time.Duration(e.Rusage.Stime.Nano()).Milliseconds())
	s.SetTag("max-rss-kb", e.Rusage.Maxrss)
}

// settings reads the kernel command line; bad values are logged, and the
// agent runs untraced rather than the VM failing to boot.
func (c *agentTracer) settings(log *slog.Logger) tracing.Settings {
	b, err := os.ReadFile(c.CmdlineFile)
	if err != nil {
		log.Error("cannot read the kernel command line; tracing is dynamic", "file", c.CmdlineFile, "err", err)
		return tracing.Settings{Mode: tracing.Dynamic}
	}
	s, errs := tracing.ParseCmdline(string(b))
	for _, err := range errs {
		log.Error(err.Error())
	}
	return s
}

// relays are the in-process guest relays.
type relays struct {
	jaeger *netx.Relay
	all    []*netx.Relay
}

func (c *agentTracer) startRelays(log *slog.Logger) (*relays, error) {
	r := &relays{}
	if c.NoRelay {
		return r, nil
	}
	start := func(log *slog.Logger, kind netx.Kind, from, to netx.Addr) (*netx.Relay, error) {
		pc, err := netx.ListenPacket(from)
		if err != nil {
			return nil, err
		}
		rl := c.start(log, kind, from, to, pc, time.Second)
		r.all = append(r.all, rl)
		return rl, nil
	}
	var err error
	if r.jaeger, err = start(log, netx.KindJaeger, c.From, c.To); err != nil {
		return r, err
	}
	switch {
	case c.Journal && systemd.UnderManager() && c.JournalFrom.Scheme == netx.SchemeUnixgram:
		// journald owns /dev/log there: kata-journald-host-redirect.service
		// carries the journal instead.
		log.Warn("--journal is for guests without systemd; journal relay not started (under systemd, kata-journald-host-redirect.service carries the journal)",
			"journal_from", c.JournalFrom.String())
	case c.Journal:
		if _, err := start(log.With("relay", "journal"), netx.KindText, c.JournalFrom, c.JournalTo); err != nil {
			return r, err
		}
	}
	return r, nil
}

// agentEnv is the environment of the agent: its tracer's destination, and
// the root span's context in Jaeger and W3C form.
func (c *agentTracer) agentEnv(tr *shimTracer) []string {
	env := os.Environ()
	// The shim's own settings are not the agent's.
	env = slicesDeleteFunc(env, func(kv string) bool {
		return strings.HasPrefix(kv, "KATATRACE_") || strings.HasPrefix(kv, "NOTIFY_SOCKET=")
	})
	host, port, err := net.SplitHostPort(c.From.HostPort)
	if err != nil || host == "" {
		host, port = "127.0.0.1", "6831"
	}
	env = append(env, "JAEGER_AGENT_HOST="+host, "JAEGER_AGENT_PORT="+port)
	if sc, ok := tr.rootContext(); ok {
		env = append(env, "UBER_TRACE_ID="+sc.String(),
			fmt.Sprintf("TRACEPARENT=00-%016x%016x-%016x-%02x", sc.TraceID().High, sc.TraceID().Low, uint64(sc.SpanID()), btoi(sc.IsSampled())))
	}
	return env
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// shutdown ends the trace and the VM: finish the root span, flush the
// tracer, drain the relays and wait for the host's answer, sync, then the
// shutdown action. As PID 1 it never returns.
func (c *agentTracer) shutdown(rc *RunContext, tr *shimTracer, r *relays, reaper *systemd.Reaper, exit systemd.ProcessExit, reason string, action systemd.Action) error {
	log := rc.Log
	pid1 := os.Getpid() == 1
	t0 := time.Now()
	sp := tr.child("shutdown")
	sp.SetTag("reason", reason)
	sp.SetTag("action", string(action))
	sp.SetTag("orphans-reaped", reaper.Orphans())
	sp.Finish()
	tr.finish(exit)
	tTracer := time.Now()

	ctx, cancel := context.WithTimeout(context.Background(), c.FlushTimeout)
	defer cancel()
	for _, rl := range r.all {
		err := rl.Shutdown(ctx)
		if readErr := rl.Err(); readErr != nil {
			log.Error("relay stopped reading early", "err", readErr)
		}
		if err != nil {
			log.Warn("flush to the host incomplete", "err", err)
		}
	}
	tFlush := time.Now()
	systemd.Sync()
	attrs := []any{"reason", reason, "action", string(action), "orphans_reaped", reaper.Orphans(),
		"tracer_close", tTracer.Sub(t0).String(), "relay_flush", tFlush.Sub(tTracer).String(),
		"total", time.Since(t0).String()}
	if r.jaeger != nil {
		attrs = append(attrs, forwarderAttrs(r.jaeger.Stats())...)
	}
	log.Info("shutting down", attrs...)

	for _, argv := range c.argv {
		c.execStop(log, reaper, argv)
	}
	switch {
	case !pid1 && (len(c.argv) > 0 || action == systemd.Exit):
		return exitWith(exit)
	case pid1 && action == systemd.Exit:
		log.Error("--shutdown=exit as PID 1 would panic the kernel; powering off instead")
		action = systemd.PowerOff
	}
	if !pid1 {
		// A service never calls reboot(2): systemd stops every unit, this
		// one included, and ends the VM in order.
		if err := systemd.AskManager(action); err != nil {
			log.Error("shutdown action not taken; exiting", "action", string(action), "err", err)
		} else {
			log.Info("asked systemd to end the VM", "action", string(action))
		}
		return exitWith(exit)
	}
	if err := systemd.Shutdown(action); err != nil {
		log.Error("shutdown failed; PID 1 must not exit, waiting", "action", string(action), "err", err)
	}
	select {} // reboot(2) ends this; PID 1 never exits
}

func exitWith(e systemd.ProcessExit) error {
	if c := e.Code(); c != 0 {
		return &ExitError{Code: c}
	}
	return nil
}

// execStop runs one --exec-stop command and waits for it (at most a minute).
func (c *agentTracer) execStop(log *slog.Logger, reaper *systemd.Reaper, argv []string) {
	pid, done, err := reaper.Start(argv, os.Environ(), []*os.File{os.Stdin, os.Stdout, os.Stderr})
	if err != nil {
		log.Error("exec-stop command failed to start", "cmd", argv, "err", err)
		return
	}
	select {
	case e := <-done:
		log.Info("exec-stop command ran", "cmd", argv, "status", e.String())
	case <-time.After(time.Minute):
		log.Error("exec-stop command still running after 1m; killing it", "cmd", argv)
		_ = unix.Kill(pid, unix.SIGKILL)
		<-done
	}
}

// watchdog pings systemd's watchdog while the agent runs, when asked to.
func watchdog(rc *RunContext) (stop func()) {
	every, err := systemd.WatchdogInterval()
	if err != nil || every <= 0 {
		return func() {}
	}
	done := make(chan struct{})
	go func() {
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				notify(rc, systemd.Watchdog)
			case <-done:
				return
			}
		}
	}()
	return func() { close(done) }
}

// shimTracer is the shim's own tracer; a nil one (not tracing) makes no-op
// spans.
type shimTracer struct {
	tracer opentracing.Tracer
	closer interface{ Close() error }
	root   opentracing.Span
	log    *slog.Logger
}

// noTracer makes no-op spans: the shim is not tracing.
func noTracer() *shimTracer {
	return &shimTracer{tracer: opentracing.NoopTracer{}, root: opentracing.NoopTracer{}.StartSpan("")}
}

func (c *agentTracer) startTracer(log *slog.Logger, s tracing.Settings, r *relays) *shimTracer {
	if !s.Mode.Static() {
		return noTracer()
	}
	return c.newTracer(log, r, "static", string(s.Mode), s.Parent)
}

// newTracer starts a tracer whose spans go onto the relay's queue (or, with
// --no-relay, over UDP to --from) and opens the root span kata-agent.
func (c *agentTracer) newTracer(log *slog.Logger, r *relays, mode, typ string, parent jaeger.SpanContext) *shimTracer {
	var transport jaeger.Transport
	if r.jaeger != nil {
		transport = tracing.NewTransport(r.jaeger.Send, 0)
	} else {
		t, err := jaeger.NewUDPTransport(c.From.HostPort, 0)
		if err != nil {
			log.Error("no tracer: cannot send to --from", "err", err)
			return noTracer()
		}
		transport = t
	}
	tracer, closer := jaeger.NewTracer(c.ServiceName, jaeger.NewConstSampler(true),
		jaeger.NewRemoteReporter(transport, jaeger.ReporterOptions.QueueSize(100000), jaeger.ReporterOptions.BufferFlushInterval(time.Second)),
		jaeger.TracerOptions.MaxTagValueLength(4096))
	opts := []opentracing.StartSpanOption{
		opentracing.Tag{Key: "source", Value: "agent"},
		opentracing.Tag{Key: "root-span", Value: true},
		opentracing.Tag{Key: "trace-mode", Value: mode},
		opentracing.Tag{Key: "trace-type", Value: typ},
	}
	if parent.IsValid() {
		opts = append(opts, opentracing.ChildOf(parent))
	}
	return &shimTracer{tracer: tracer, closer: closer, root: tracer.StartSpan("kata-agent", opts...), log: log}
}

func (t *shimTracer) child(op string, opts ...opentracing.StartSpanOption) opentracing.Span {
	return t.tracer.StartSpan(op, append(opts, opentracing.ChildOf(t.root.Context()))...)
}

// boot adds the span from the kernel's start to the shim's.
func (t *shimTracer) boot(shimStart time.Time) {
	b, err := os.ReadFile("/proc/uptime")
	if err != nil {
		return
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return
	}
	secs, err := strconv.ParseFloat(f[0], 64)
	if err != nil {
		return
	}
	kernelStart := time.Now().Add(-time.Duration(secs * float64(time.Second)))
	s := t.child("boot", opentracing.StartTime(kernelStart))
	s.SetTag("uptime-at-shim-start-ms", shimStart.Sub(kernelStart).Milliseconds())
	s.FinishWithOptions(opentracing.FinishOptions{FinishTime: shimStart})
}

func (t *shimTracer) rootContext() (jaeger.SpanContext, bool) {
	sc, ok := t.root.Context().(jaeger.SpanContext)
	return sc, ok
}

// finish ends the root span and flushes the tracer into the relay.
func (t *shimTracer) finish(e systemd.ProcessExit) {
	t.root.SetTag("exit-code", e.Code())
	t.root.Finish()
	if t.closer != nil {
		if err := t.closer.Close(); err != nil {
			t.log.Warn("tracer flush", "err", err)
		}
	}
}
