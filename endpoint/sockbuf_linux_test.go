package endpoint

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/katatrace/katatrace/internal/testutil"
)

func sockopt(t *testing.T, c interface {
	SyscallConn() (syscall.RawConn, error)
}, opt int) int {
	t.Helper()
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var v int
	var gerr error
	if err := rc.Control(func(fd uintptr) { v, gerr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, opt) }); err != nil {
		t.Fatal(err)
	}
	if gerr != nil {
		t.Fatal(gerr)
	}
	return v
}

// TestBuffersBeyondTheSystemMaximum: a stream to the host may hold
// streamWindow bytes in flight, and a datagram socket buffers socketBuffer,
// even where the system's maximum is lower (as root).
func TestBuffersBeyondTheSystemMaximum(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("forcing a socket buffer beyond net.core.[rw]mem_max needs root (CAP_NET_ADMIN)")
	}
	path := filepath.Join(testutil.SockDir(t), "h.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := Dial(context.Background(), mustParseAddr("unix://"+path))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// The kernel doubles what it is given (its bookkeeping); below the
	// request where the system's maximum capped it.
	if got := sockopt(t, c.(*net.UnixConn), unix.SO_SNDBUF); got != 2*streamWindow {
		t.Errorf("stream send buffer = %d, want %d", got, 2*streamWindow)
	}
	pc, err := ListenPacket(mustParseAddr("udp://127.0.0.1:0"))
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	if got := sockopt(t, pc.(*net.UDPConn), unix.SO_RCVBUF); got != 2*socketBuffer {
		t.Errorf("datagram receive buffer = %d, want %d", got, 2*socketBuffer)
	}
}
