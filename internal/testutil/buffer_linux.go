package testutil

import "syscall"

// ForceReadBuffer sets a socket's receive buffer beyond rmem_max where the
// process may (root), and as large as allowed otherwise.
func ForceReadBuffer(c interface {
	SyscallConn() (syscall.RawConn, error)
	SetReadBuffer(int) error
}, n int) {
	_ = c.SetReadBuffer(n)
	if rc, err := c.SyscallConn(); err == nil {
		_ = rc.Control(func(fd uintptr) {
			_ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUFFORCE, n)
		})
	}
}
