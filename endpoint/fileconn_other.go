//go:build !linux

package endpoint

import (
	"errors"
	"net"
	"os"
)

// FileConn is only supported on Linux.
func FileConn(*os.File) (net.Conn, error) {
	return nil, errors.New("connections from files are only supported on Linux")
}

// FileListener is only supported on Linux.
func FileListener(*os.File) (net.Listener, error) {
	return nil, errors.New("listeners from files are only supported on Linux")
}
