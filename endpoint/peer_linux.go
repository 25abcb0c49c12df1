package endpoint

import (
	"fmt"
	"net"

	"golang.org/x/sys/unix"
)

// UnixPeer names the process at the other end of a unix connection (its
// pid, from SO_PEERCRED): Firecracker's or Cloud Hypervisor's VMM for a
// hybrid-vsock guest, the guest relay itself on a test's socket.
func UnixPeer(conn net.Conn) string {
	uc, ok := conn.(*net.UnixConn)
	if !ok {
		return ""
	}
	rc, err := uc.SyscallConn()
	if err != nil {
		return ""
	}
	var cred *unix.Ucred
	_ = rc.Control(func(fd uintptr) { cred, err = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED) })
	if err != nil || cred == nil || cred.Pid == 0 {
		return ""
	}
	return fmt.Sprintf("pid %d", cred.Pid)
}
