package endpoint

import (
	"context"
	"fmt"
	"net"
	"os"
	"syscall"

	"github.com/mdlayher/vsock"
	"golang.org/x/sys/unix"
)

// listenVsock binds and listens itself, so that the listener keeps a
// descriptor of its socket (for the file descriptor store):
// mdlayher/vsock's Listener gives none out.
func listenVsock(a Addr) (net.Listener, error) {
	cid := a.CID
	if a.AnyCID {
		cid = unix.VMADDR_CID_ANY
	}
	fd, err := unix.Socket(unix.AF_VSOCK, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, os.NewSyscallError("socket", err)
	}
	f := os.NewFile(uintptr(fd), fmt.Sprintf("vsock://%d:%d", cid, a.Port))
	defer f.Close()
	if err := unix.Bind(fd, &unix.SockaddrVM{CID: cid, Port: a.Port}); err != nil {
		return nil, fmt.Errorf("listen on %s: %w", a, os.NewSyscallError("bind", err))
	}
	if err := unix.Listen(fd, unix.SOMAXCONN); err != nil {
		return nil, fmt.Errorf("listen on %s: %w", a, os.NewSyscallError("listen", err))
	}
	return vsockFileListener(f)
}

// vsockListener is a vsock listener with a descriptor of its socket of its
// own (SyscallConn).
type vsockListener struct {
	*vsock.Listener
	f *os.File
}

// vsockFileListener makes a listener of f's listening vsock socket; f
// stays the caller's.
func vsockFileListener(f *os.File) (net.Listener, error) {
	ln, err := vsock.FileListener(f)
	if err != nil {
		return nil, err
	}
	own, err := dupFile(f)
	if err != nil {
		_ = ln.Close()
		return nil, err
	}
	return &vsockListener{Listener: ln, f: own}, nil
}

func (l *vsockListener) SyscallConn() (syscall.RawConn, error) { return l.f.SyscallConn() }

func (l *vsockListener) Close() error {
	_ = l.f.Close()
	return l.Listener.Close()
}

// dupFile is a copy of f, close-on-exec.
func dupFile(f *os.File) (*os.File, error) {
	fd, err := dupFD(f)
	if err != nil {
		return nil, err
	}
	return os.NewFile(uintptr(fd), f.Name()), nil
}

// dupFD is a copy of f's descriptor, close-on-exec, made without Fd
// (which would make a socket blocking for every copy of it).
func dupFD(f *os.File) (int, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return 0, err
	}
	var fd int
	var derr error
	if err := rc.Control(func(p uintptr) { fd, derr = unix.FcntlInt(p, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
		return 0, err
	}
	if derr != nil {
		return 0, os.NewSyscallError("fcntl", derr)
	}
	return fd, nil
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
