package endpoint

import (
	"fmt"
	"net"
	"os"

	"github.com/mdlayher/socket"
	"github.com/mdlayher/vsock"
	"golang.org/x/sys/unix"
)

// FileConn is the connected socket f holds (one another process passed
// this one: systemd's file descriptor store), as the net.Conn it was:
// unix or TCP as net.FileConn makes them, vsock as mdlayher/vsock's
// connections are (net.FileConn does not know the family). f stays the
// caller's to close.
func FileConn(f *os.File) (net.Conn, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return nil, err
	}
	var fd, domain int
	var derr error
	// Fd would make the socket blocking: its file status is shared with
	// every copy of it, in the store too.
	if err := rc.Control(func(p uintptr) {
		domain, derr = unix.GetsockoptInt(int(p), unix.SOL_SOCKET, unix.SO_DOMAIN)
		if derr == nil && domain == unix.AF_VSOCK {
			fd, derr = unix.FcntlInt(p, unix.F_DUPFD_CLOEXEC, 0)
		}
	}); err != nil {
		return nil, err
	}
	if derr != nil {
		return nil, fmt.Errorf("%s: %w", f.Name(), derr)
	}
	if domain != unix.AF_VSOCK {
		return net.FileConn(f)
	}
	c, err := socket.New(fd, "vsock")
	if err != nil {
		_ = unix.Close(fd)
		return nil, fmt.Errorf("%s: %w", f.Name(), err)
	}
	local, lerr := c.Getsockname()
	remote, rerr := c.Getpeername()
	lvm, lok := local.(*unix.SockaddrVM)
	rvm, rok := remote.(*unix.SockaddrVM)
	if lerr != nil || rerr != nil || !lok || !rok {
		_ = c.Close()
		return nil, fmt.Errorf("%s: not a connected vsock socket (%v, %v)", f.Name(), lerr, rerr)
	}
	return &vsockConn{Conn: c, local: &vsock.Addr{ContextID: lvm.CID, Port: lvm.Port},
		remote: &vsock.Addr{ContextID: rvm.CID, Port: rvm.Port}}, nil
}

// vsockConn is a vsock connection taken from a file: mdlayher/vsock makes
// its Conn only by dialling or accepting.
type vsockConn struct {
	*socket.Conn
	local, remote *vsock.Addr
}

func (c *vsockConn) LocalAddr() net.Addr  { return c.local }
func (c *vsockConn) RemoteAddr() net.Addr { return c.remote }

var _ net.Conn = (*vsockConn)(nil)
