//go:build !linux

package endpoint

import (
	"errors"
	"net"
)

func openSerial(string) (net.Conn, error) {
	return nil, errors.New("serial:// is only supported on Linux")
}
