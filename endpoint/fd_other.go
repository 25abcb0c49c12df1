//go:build !linux

package endpoint

import (
	"errors"
	"net"
)

var errNoFD = errors.New("fd:// sockets are only supported on Linux")

func fdListener(int) (net.Listener, error) { return nil, errNoFD }

func fdPacketConn(int) (net.PacketConn, error) { return nil, errNoFD }
