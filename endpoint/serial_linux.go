package endpoint

import (
	"fmt"
	"net"
	"os"

	"golang.org/x/sys/unix"
)

// openSerial opens a virtio-serial port or a tty as a stream. A tty is put
// in raw mode (no echo, no line discipline, 8 bits clean), or the frames
// would be mangled by CR/LF translation and echoed back.
func openSerial(path string) (net.Conn, error) {
	f, err := os.OpenFile(path, os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		return nil, err
	}
	rc, err := f.SyscallConn()
	if err != nil {
		_ = f.Close()
		return nil, err
	}
	var terr error
	if err := rc.Control(func(fd uintptr) { terr = makeRaw(int(fd)) }); err != nil {
		terr = err
	}
	if terr != nil {
		_ = f.Close()
		return nil, fmt.Errorf("set %s to raw mode: %w", path, terr)
	}
	return serialConn{f}, nil
}

func makeRaw(fd int) error {
	t, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err == unix.ENOTTY || err == unix.EINVAL {
		return nil // a virtio-serial port: already a clean byte stream
	}
	if err != nil {
		return err
	}
	t.Iflag &^= unix.IGNBRK | unix.BRKINT | unix.PARMRK | unix.ISTRIP | unix.INLCR | unix.IGNCR | unix.ICRNL | unix.IXON | unix.IXOFF
	t.Oflag &^= unix.OPOST
	t.Lflag &^= unix.ECHO | unix.ECHONL | unix.ICANON | unix.ISIG | unix.IEXTEN
	t.Cflag &^= unix.CSIZE | unix.PARENB
	t.Cflag |= unix.CS8 | unix.CLOCAL | unix.CREAD
	t.Cc[unix.VMIN] = 1
	t.Cc[unix.VTIME] = 0
	return unix.IoctlSetTermios(fd, unix.TCSETS, t)
}
