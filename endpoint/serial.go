package endpoint

import (
	"net"
	"os"
)

// serialConn is a character device used as a byte stream.
type serialConn struct {
	*os.File
}

type serialAddr string

func (a serialAddr) Network() string { return SchemeSerial }
func (a serialAddr) String() string  { return string(a) }

func (c serialConn) LocalAddr() net.Addr  { return serialAddr(c.Name()) }
func (c serialConn) RemoteAddr() net.Addr { return serialAddr(c.Name()) }
