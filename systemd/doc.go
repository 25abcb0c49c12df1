// Package systemd speaks to the service manager: sd_notify over a unix
// datagram socket or, from a VM guest, over vsock (systemd ≥ 254's
// NOTIFY_SOCKET=vsock:CID:PORT); watchdog pings; and, for a service of
// systemd running as PID 1, asking it to end the machine in order
// (AskManager), which is refused anywhere else.
//
// It knows nothing of tracing.
package systemd
