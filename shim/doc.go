// Package shim is kata-agent-tracer's work once its flags are read: it
// traces the agent (static, from the kernel command line, or dynamic,
// through its gRPC proxy), relays the agent's spans in-process, supervises
// the agent as its init (signals passed on, orphans reaped), and at the
// agent's end finishes the trace, waits for the host to confirm it, syncs
// and ends the VM (reboot(2) only as PID 1; under systemd, by asking it).
package shim
