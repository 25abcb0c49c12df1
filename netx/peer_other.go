//go:build !linux

package netx

import "net"

// unixPeer has no peer credentials to read here.
func unixPeer(net.Conn) string { return "" }
