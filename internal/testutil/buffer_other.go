//go:build !linux

package testutil

import "syscall"

// ForceReadBuffer asks for a large receive buffer; only Linux can force one.
func ForceReadBuffer(c interface {
	SyscallConn() (syscall.RawConn, error)
	SetReadBuffer(int) error
}, n int) {
	_ = c.SetReadBuffer(n)
}
