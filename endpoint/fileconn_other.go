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
