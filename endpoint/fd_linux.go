package endpoint

import (
	"fmt"
	"net"
	"os"
	"sync"

	"github.com/katatrace/katatrace/systemd"
	"golang.org/x/sys/unix"
)

// activated holds the sockets systemd passed (LISTEN_FDS), by number.
// Their numbers are read without Fd, which would make a non-blocking
// socket blocking: a stored connection shares its file status with the
// one adopted from it.
var activated = sync.OnceValue(func() map[int]*os.File {
	m := map[int]*os.File{}
	for _, f := range systemd.ListenFDs() {
		if rc, err := f.SyscallConn(); err == nil {
			_ = rc.Control(func(fd uintptr) { m[int(fd)] = f })
		}
	}
	return m
})

// socketFile returns fd n as a file: one that systemd passed, or else an
// inherited socket (a wrapper's, or inetd style).
func socketFile(n int) (*os.File, int, error) {
	f := activated()[n]
	if f == nil {
		var st unix.Stat_t
		if err := unix.Fstat(n, &st); err != nil {
			return nil, 0, fmt.Errorf("fd %d is not open: no such socket from systemd (LISTEN_FDS) or the parent process", n)
		}
		if st.Mode&unix.S_IFMT != unix.S_IFSOCK {
			return nil, 0, fmt.Errorf("fd %d is not a socket", n)
		}
		f = os.NewFile(uintptr(n), fmt.Sprintf("fd://%d", n))
	}
	typ, err := unix.GetsockoptInt(n, unix.SOL_SOCKET, unix.SO_TYPE)
	if err != nil {
		return nil, 0, fmt.Errorf("fd %d: %w", n, err)
	}
	return f, typ, nil
}

func fdListener(n int) (net.Listener, error) {
	f, typ, err := socketFile(n)
	if err != nil {
		return nil, err
	}
	if typ != unix.SOCK_STREAM {
		return nil, fmt.Errorf("fd %d is a datagram socket; a listener needs a stream socket", n)
	}
	if dom, _ := unix.GetsockoptInt(n, unix.SOL_SOCKET, unix.SO_DOMAIN); dom == unix.AF_VSOCK {
		return vsockFileListener(f)
	}
	return net.FileListener(f)
}

func fdPacketConn(n int) (net.PacketConn, error) {
	f, typ, err := socketFile(n)
	if err != nil {
		return nil, err
	}
	if typ != unix.SOCK_DGRAM {
		return nil, fmt.Errorf("fd %d is a stream socket; datagrams need a datagram socket (syslog.socket is one)", n)
	}
	return net.FilePacketConn(f)
}
