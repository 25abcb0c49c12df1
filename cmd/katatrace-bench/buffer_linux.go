package main

import (
	"net"
	"syscall"
)

// forceReadBuffer gives the sink a receive buffer beyond rmem_max (as root),
// so that the sink is never what loses datagrams.
func forceReadBuffer(c *net.UDPConn, n int) {
	_ = c.SetReadBuffer(n)
	if rc, err := c.SyscallConn(); err == nil {
		_ = rc.Control(func(fd uintptr) {
			_ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUFFORCE, n)
		})
	}
}
