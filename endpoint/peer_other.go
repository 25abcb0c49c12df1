//go:build !linux

package endpoint

import "net"

// UnixPeer has no peer credentials to read here.
func UnixPeer(net.Conn) string { return "" }
