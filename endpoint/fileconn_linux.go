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
	domain, err := socketDomain(f)
	if err != nil {
		return nil, err
	}
	if domain != unix.AF_VSOCK {
		return net.FileConn(f)
	}
	fd, err := dupFD(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", f.Name(), err)
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

// FileListener is the listening socket f holds (one systemd's file
// descriptor store passed this process): unix, TCP or vsock. f stays the
// caller's to close.
func FileListener(f *os.File) (net.Listener, error) {
	domain, err := socketDomain(f)
	if err != nil {
		return nil, err
	}
	if domain == unix.AF_VSOCK {
		return vsockFileListener(f)
	}
	return net.FileListener(f)
}

// socketDomain is the address family of f's socket, read without Fd
// (which would make it blocking: its file status is shared with every
// copy of it, in the store too).
func socketDomain(f *os.File) (int, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return 0, err
	}
	var domain int
	var derr error
	if err := rc.Control(func(p uintptr) { domain, derr = unix.GetsockoptInt(int(p), unix.SOL_SOCKET, unix.SO_DOMAIN) }); err != nil {
		return 0, err
	}
	if derr != nil {
		return 0, fmt.Errorf("%s: %w", f.Name(), derr)
	}
	return domain, nil
}
