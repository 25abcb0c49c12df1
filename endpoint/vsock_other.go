//go:build !linux

package endpoint

import (
	"context"
	"errors"
	"net"
)

var errNoVsock = errors.New("vsock is only supported on Linux")

func listenVsock(Addr) (net.Listener, error) { return nil, errNoVsock }

func dialVsock(context.Context, Addr) (net.Conn, error) { return nil, errNoVsock }

// Only Linux can force a buffer beyond the system's maximum.
const soRcvbufForce, soSndbufForce = 0, 0

func widenVsock(net.Conn, int) {}

// VsockCID is the context ID of a vsock address: there are none here.
func VsockCID(net.Addr) (uint32, bool) { return 0, false }
