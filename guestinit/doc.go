// Package guestinit does init's work for the agent in a VM guest: as PID 1
// it mounts /proc, /sys, /dev and /run and brings lo up; a Supervisor owns
// Wait4 (every child and orphan reaped, none stolen) and passes signals on
// to the agent, in one loop as tini does; End ends the VM, with reboot(2) as
// PID 1 (and only then) or by asking systemd as its service.
//
// It knows nothing of tracing.
package guestinit
