package katatest

import (
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// unreadBytes is what the peer has not read yet of what was written on
// conn (SIOCOUTQ), or -1.
func unreadBytes(conn net.Conn) int {
	sc, ok := conn.(syscall.Conn)
	if !ok {
		return -1
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return -1
	}
	n := -1
	_ = rc.Control(func(fd uintptr) {
		if v, err := unix.IoctlGetInt(int(fd), unix.SIOCOUTQ); err == nil {
			n = v
		}
	})
	return n
}
