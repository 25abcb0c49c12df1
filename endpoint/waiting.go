package endpoint

import "net"

// Waiting is how many bytes of c's stream have arrived and are not read
// yet, and whether that can be told: a connection may say it itself (an
// in-memory one, with a Waiting() int method); a socket is asked
// (SIOCINQ: unix and TCP streams; vsock on kernels that answer it). A wrapper
// that has a NetConn method is looked through.
func Waiting(c net.Conn) (int, bool) {
	for {
		if w, ok := c.(interface{ Waiting() int }); ok {
			return w.Waiting(), true
		}
		u, ok := c.(interface{ NetConn() net.Conn })
		if !ok {
			return waiting(c)
		}
		c = u.NetConn()
	}
}

// unwrap is the connection under c's wrappers (those with a NetConn
// method, as crypto/tls's).
func unwrap(c net.Conn) net.Conn {
	for {
		u, ok := c.(interface{ NetConn() net.Conn })
		if !ok {
			return c
		}
		c = u.NetConn()
	}
}
