package endpoint

import (
	"net"

	"golang.org/x/sys/unix"
)

func waiting(c net.Conn) (n int, ok bool) {
	control(c, func(fd int) {
		v, err := unix.IoctlGetInt(fd, unix.SIOCINQ)
		n, ok = v, err == nil && v >= 0
	})
	return n, ok
}
