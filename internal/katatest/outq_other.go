//go:build !linux

package katatest

import "net"

// unreadBytes is only known on Linux.
func unreadBytes(net.Conn) int { return 0 }
