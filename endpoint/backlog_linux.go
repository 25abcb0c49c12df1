package endpoint

import (
	"errors"
	"net"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// acceptBacklog accepts, without waiting, the connections queued on ln's
// socket: those a peer made before the socket's file went, which no
// Accept has taken yet. A listener that is not a socket has none.
func acceptBacklog(ln net.Listener) []net.Conn {
	sc, ok := ln.(syscall.Conn)
	if !ok {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	var fds []int
	// Control, not Read: a Read would wait for more.
	_ = rc.Control(func(fd uintptr) {
		for {
			nfd, _, err := unix.Accept4(int(fd), unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK)
			if errors.Is(err, unix.EINTR) || errors.Is(err, unix.ECONNABORTED) {
				continue
			}
			if err != nil {
				return
			}
			fds = append(fds, nfd)
		}
	})
	conns := make([]net.Conn, 0, len(fds))
	for _, fd := range fds {
		f := os.NewFile(uintptr(fd), "backlog")
		c, err := FileConn(f)
		_ = f.Close()
		if err == nil {
			conns = append(conns, c)
		}
	}
	return conns
}
