//go:build !linux

package netx

import (
	"context"
	"errors"
	"net"
)

var errNoVsock = errors.New("vsock is only supported on Linux")

func listenVsock(Addr) (net.Listener, error) { return nil, errNoVsock }

func dialVsock(context.Context, Addr) (net.Conn, error) { return nil, errNoVsock }
