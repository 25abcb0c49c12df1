package endpoint

import (
	"net"
	"syscall"
)

// socketBuffer is the kernel buffer asked for on datagram sockets: bursts
// of spans arrive faster than one read at a time drains them.
const socketBuffer = 8 << 20

// streamWindow is what a stream between the relays may hold in flight, in
// the kernel: the default (208 KiB for a unix socket, 256 KiB for vsock)
// holds three 60 KB datagrams, so a guest writing big ones waits for the
// host at nearly every write. 1 MiB let the bench's 60 KB datagrams
// through 1.5 times as fast.
const streamWindow = 1 << 20

// SetReadBuffer asks for a receive buffer of n bytes on c: beyond the
// system's maximum (net.core.rmem_max) where the process may (as root, or
// with CAP_NET_ADMIN), as large as the maximum allows otherwise.
func SetReadBuffer(c any, n int) { setBuffer(c, soRcvbufForce, syscall.SO_RCVBUF, n) }

// setSendBuffer is SetReadBuffer for the send buffer.
func setSendBuffer(c any, n int) { setBuffer(c, soSndbufForce, syscall.SO_SNDBUF, n) }

func setBuffer(c any, force, opt, n int) {
	control(c, func(fd int) {
		if force == 0 || syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, force, n) != nil {
			_ = syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, opt, n)
		}
	})
}

// control runs fn on c's socket, where c has one.
func control(c any, fn func(fd int)) {
	sc, ok := c.(interface {
		SyscallConn() (syscall.RawConn, error)
	})
	if !ok {
		return
	}
	if rc, err := sc.SyscallConn(); err == nil {
		_ = rc.Control(func(fd uintptr) { fn(int(fd)) })
	}
}

// widenStream gives a stream to the host room for streamWindow bytes in
// flight. On a unix socket the sender's buffer bounds them; on vsock the
// receiver's, which the host sets too (the kernel tells the sender it as
// its credit).
func widenStream(c net.Conn) {
	if _, ok := c.(*net.UnixConn); ok {
		setSendBuffer(c, streamWindow)
		return
	}
	widenVsock(c, streamWindow)
}

// WidenAccepted gives a guest's stream, accepted by the host, room for
// streamWindow bytes in flight: on vsock the host's receive buffer is the
// credit the kernel gives the guest (on a unix socket the guest's own send
// buffer bounds it, see widenStream). A wrapper with a NetConn method is
// looked through.
func WidenAccepted(c net.Conn) { widenVsock(unwrap(c), streamWindow) }
