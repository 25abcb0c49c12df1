package endpoint

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"
	"time"
)

// Listen opens a stream listener on a vsock://, unix://, tcp:// or fd://
// address: the host relay's side.
func Listen(a Addr) (net.Listener, error) {
	var ln net.Listener
	var err error
	switch a.Scheme {
	case SchemeVsock:
		ln, err = listenVsock(a)
	case SchemeUnix:
		ln, err = listenUnixPath("unix", a.Path, func() (net.Listener, error) { return net.Listen("unix", a.Path) })
	case SchemeTCP:
		ln, err = net.Listen("tcp", a.HostPort)
	case SchemeFD:
		ln, err = fdListener(a.FD)
	default:
		return nil, a.Require("a stream listener takes", SchemeVsock, SchemeUnix, SchemeTCP, SchemeFD)
	}
	if err != nil {
		return nil, err // net's own error names the address
	}
	return ln, nil
}

// ListenPacket opens a datagram socket to read from on a udp://,
// unixgram:// or fd:// address: the guest relay's side.
func ListenPacket(a Addr) (net.PacketConn, error) {
	var pc net.PacketConn
	var err error
	switch a.Scheme {
	case SchemeUDP:
		pc, err = net.ListenPacket("udp", a.HostPort)
	case SchemeUnixgram:
		pc, err = listenUnixPath("unixgram", a.Path, func() (net.PacketConn, error) { return net.ListenPacket("unixgram", a.Path) })
	case SchemeFD:
		pc, err = fdPacketConn(a.FD)
	default:
		return nil, a.Require("a datagram socket to read from takes", SchemeUDP, SchemeUnixgram, SchemeFD)
	}
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", a, err)
	}
	SetReadBuffer(pc, socketBuffer)
	return pc, nil
}

// Dial opens a stream to a vsock://, unix://, tcp:// or serial:// address:
// the guest relay's way to the host.
func Dial(ctx context.Context, a Addr) (net.Conn, error) {
	var c net.Conn
	var err error
	switch a.Scheme {
	case SchemeVsock:
		if a.AnyCID {
			return nil, &AddrError{Value: a.String(), Reason: "a connection needs a CID, not \"any\"", Example: examples[SchemeVsock]}
		}
		c, err = dialVsock(ctx, a)
	case SchemeUnix:
		var d net.Dialer
		c, err = d.DialContext(ctx, "unix", a.Path)
	case SchemeTCP:
		var d net.Dialer
		c, err = d.DialContext(ctx, "tcp", a.HostPort)
	case SchemeSerial:
		c, err = openSerial(a.Path)
	default:
		return nil, a.Require("a stream to dial takes", SchemeVsock, SchemeUnix, SchemeTCP, SchemeSerial)
	}
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", a, err)
	}
	widenStream(c)
	return c, nil
}

// DialPacket opens a datagram socket that sends to a udp:// or unixgram://
// address: the host relay's way to Jaeger.
func DialPacket(a Addr) (net.Conn, error) {
	var c net.Conn
	var err error
	switch a.Scheme {
	case SchemeUDP:
		c, err = net.Dial("udp", a.HostPort)
	case SchemeUnixgram:
		c, err = net.Dial("unixgram", a.Path)
	default:
		return nil, a.Require("a datagram destination takes", SchemeUDP, SchemeUnixgram)
	}
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", a, err)
	}
	setSendBuffer(c, socketBuffer)
	return c, nil
}

// listenUnixPath binds a unix socket path. A socket file left behind by a
// process that is gone is removed and the bind tried again; one that a live
// process still answers on is an error.
func listenUnixPath[T any](network, path string, listen func() (T, error)) (T, error) {
	l, err := listen()
	if err == nil || !errors.Is(err, syscall.EADDRINUSE) || path[0] == '@' {
		return l, err
	}
	fi, serr := os.Lstat(path)
	if serr != nil || fi.Mode()&os.ModeSocket == 0 {
		return l, err
	}
	if c, derr := net.DialTimeout(network, path, time.Second); derr == nil {
		_ = c.Close()
		return l, fmt.Errorf("%w: another process is listening there", err)
	} else if !errors.Is(derr, syscall.ECONNREFUSED) {
		return l, err
	}
	if rerr := os.Remove(path); rerr != nil {
		return l, fmt.Errorf("%w (removing the stale socket failed: %v)", err, rerr)
	}
	return listen()
}
