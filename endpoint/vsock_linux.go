package endpoint

import (
	"context"
	"net"

	"github.com/mdlayher/vsock"
	"golang.org/x/sys/unix"
)

func listenVsock(a Addr) (net.Listener, error) {
	cid := a.CID
	if a.AnyCID {
		cid = unix.VMADDR_CID_ANY
	}
	return vsock.ListenContextID(cid, a.Port, nil)
}

func dialVsock(ctx context.Context, a Addr) (net.Conn, error) {
	return vsock.DialContext(ctx, a.CID, a.Port, nil)
}

// The options that force a buffer beyond the system's maximum.
const soRcvbufForce, soSndbufForce = unix.SO_RCVBUFFORCE, unix.SO_SNDBUFFORCE

// widenVsock sets a vsock connection's buffer, which bounds what its peer
// may send ahead, to n bytes (its maximum first: the kernel clamps to it).
func widenVsock(c net.Conn, n int) {
	if _, ok := c.(*vsock.Conn); !ok {
		return
	}
	control(c, func(fd int) {
		_ = unix.SetsockoptUint64(fd, unix.AF_VSOCK, unix.SO_VM_SOCKETS_BUFFER_MAX_SIZE, uint64(n))
		_ = unix.SetsockoptUint64(fd, unix.AF_VSOCK, unix.SO_VM_SOCKETS_BUFFER_SIZE, uint64(n))
	})
}

// VsockCID is the context ID of a vsock address (a guest's, on a host
// listener).
func VsockCID(a net.Addr) (uint32, bool) {
	va, ok := a.(*vsock.Addr)
	if !ok {
		return 0, false
	}
	return va.ContextID, true
}
