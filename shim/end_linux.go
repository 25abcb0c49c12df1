package shim

import (
	"os"
	"time"

	"github.com/katatrace/katatrace/guestinit"
	"github.com/katatrace/katatrace/tracing"
	"github.com/opentracing/opentracing-go"
)

// ending is how the VM ends once the trace is delivered, if the shim ends
// it at all. Under systemd, static tracing ends it as Kata's ExecStop did;
// dynamic and untraced runs leave that to the runtime, unless --shutdown
// says otherwise. PID 1 always ends it: its exit would panic the kernel.
func (c *shim) ending(pid1, managed, static bool) (guestinit.Action, bool) {
	switch c.Shutdown {
	case "poweroff":
		return guestinit.PowerOff, true
	case "reboot":
		return guestinit.Reboot, true
	case "halt":
		return guestinit.Halt, true
	case "exit":
		return guestinit.PowerOff, pid1
	}
	return guestinit.PowerOff, pid1 || managed && static
}

// shutdown ends the trace and the VM: finish the root span, flush the
// tracer, drain the relays and wait for the host's answer, sync, then the
// --exec-stop commands or the shutdown action. As PID 1 it never returns.
func (c *shim) shutdown(tr *tracing.Session, r *relays, sup *guestinit.Supervisor, exit guestinit.ProcessExit, reason string, action guestinit.Action, end bool) int {
	log := c.Log
	pid1 := os.Getpid() == 1
	if pid1 && c.Shutdown == "exit" {
		log.Error("--shutdown=exit as PID 1 would panic the kernel; powering off instead")
	}
	what := "exit"
	if end {
		what = action.String()
	}
	t0 := time.Now()
	sp := tr.Child("shutdown")
	sp.SetTag("reason", reason)
	sp.SetTag("action", what)
	sp.SetTag("orphans-reaped", sup.Orphans())
	sp.Finish()
	tr.Finish(map[string]any{"exit-code": exit.Code()})
	tTracer := time.Now()
	r.stop(log, c.FlushTimeout)
	tFlush := time.Now()
	guestinit.Sync()
	attrs := []any{"reason", reason, "action", what, "orphans_reaped", sup.Orphans(),
		"tracer_close", tTracer.Sub(t0).String(), "relay_flush", tFlush.Sub(tTracer).String(),
		"total", time.Since(t0).String()}
	if r.jaeger != nil {
		attrs = append(attrs, r.jaeger.Stats().LogAttrs()...)
	}
	log.Info("shutting down", attrs...)

	for _, argv := range c.ExecStop {
		e, err := sup.Run(argv, os.Environ(), []*os.File{os.Stdin, os.Stdout, os.Stderr}, time.Minute)
		if err != nil {
			log.Error("exec-stop command failed", "cmd", argv, "err", err)
		} else {
			log.Info("exec-stop command ran", "cmd", argv, "status", e.String())
		}
	}
	if !end || !pid1 && len(c.ExecStop) > 0 {
		return exit.Code()
	}
	how, err := guestinit.End(action)
	switch {
	case err != nil && !pid1:
		log.Error("shutdown action not taken; exiting", "action", what, "err", err)
		return exit.Code()
	case err != nil:
		log.Error("shutdown failed; PID 1 must not exit, waiting", "action", what, "err", err)
	case how == "systemd":
		log.Info("asked systemd to end the VM", "action", what)
		return exit.Code()
	}
	select {} // reboot(2) ends this; PID 1 never exits
}

func tagExit(s opentracing.Span, e guestinit.ProcessExit) {
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
