//go:build !linux

package main

import "net"

func forceReadBuffer(c *net.UDPConn, n int) { _ = c.SetReadBuffer(n) }
