// Package systemd speaks to the service manager, whichever it is: sd_notify
// over a unix datagram socket or, from a VM guest, over vsock (systemd ≥ 254's
// NOTIFY_SOCKET=vsock:CID:PORT); watchdog pings; and the end of a VM without
// systemd: sync, then reboot(2), which is only ever called as PID 1.
//
// It knows nothing of tracing.
package systemd
