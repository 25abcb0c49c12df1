// Package systemd speaks to the service manager, whichever it is: sd_notify
// over a unix datagram socket or, from a VM guest, over vsock (systemd ≥ 254's
// NOTIFY_SOCKET=vsock:CID:PORT); watchdog pings. Where there is no service
// manager it does the duties of one: as PID 1, mount /proc, /sys, /dev and
// /run, bring lo up, reap every orphan (one goroutine owns Wait4), and end
// the VM with sync and reboot(2), which is only ever called as PID 1. Under
// systemd it asks systemd to end the VM instead (AskManager), and only when
// systemd is PID 1 and this process its service.
//
// It knows nothing of tracing.
package systemd
