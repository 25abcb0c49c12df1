package endpoint

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
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
		ln, err = listenUnix(a.Path)
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
		pc, err = listenUnixgram(a.Path)
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

// A unix socket at a path appears there only once it is ready: bound
// under a temporary name in the same directory, listening, then put in
// place in one step. Bound at its path, it would exist for a moment before
// it listens, and a peer connecting then (a VMM that starts as the relay
// does) would be refused. What is at the path already is kept to the old
// rule: a socket left by a process that is gone is replaced, one that a
// live process answers on is an error, anything else is left alone.
// Abstract names (@name) have no file: they are bound as they are.
//
// The kernel keeps the name a socket was bound to (getsockname, and an
// accepted connection's LocalAddr, say the temporary one): the listener
// returned says its path, and removes that path when closed.

// listenUnix listens on a unix stream socket at path.
func listenUnix(path string) (net.Listener, error) {
	if isAbstract(path) {
		return net.Listen("unix", path)
	}
	var ul *net.UnixListener
	temp, err := bindTemp("unix", path, func(name string) (err error) {
		ul, err = net.ListenUnix("unix", &net.UnixAddr{Name: name, Net: "unix"})
		return err
	})
	if err != nil {
		return nil, err
	}
	if err := place("unix", temp, path); err != nil {
		_ = ul.Close() // removes the temporary name
		return nil, err
	}
	ul.SetUnlinkOnClose(false) // its name is gone: the wrapper removes path
	l := &unixListener{UnixListener: ul, addr: &net.UnixAddr{Name: path, Net: "unix"}}
	l.unlink.Store(true)
	return l, nil
}

// listenUnixgram binds a unix datagram socket at path. As a unixgram
// socket made by net, its file stays when it is closed (the next bind
// finds it stale and replaces it).
func listenUnixgram(path string) (net.PacketConn, error) {
	if isAbstract(path) {
		return net.ListenPacket("unixgram", path)
	}
	var uc *net.UnixConn
	temp, err := bindTemp("unixgram", path, func(name string) (err error) {
		uc, err = net.ListenUnixgram("unixgram", &net.UnixAddr{Name: name, Net: "unixgram"})
		return err
	})
	if err != nil {
		return nil, err
	}
	if err := place("unixgram", temp, path); err != nil {
		_ = uc.Close()
		_ = os.Remove(temp)
		return nil, err
	}
	return &unixgramConn{UnixConn: uc, addr: &net.UnixAddr{Name: path, Net: "unixgram"}}, nil
}

func isAbstract(path string) bool { return path != "" && path[0] == '@' }

// unixListener is a listener whose socket was renamed to its path: its
// Addr is that path, and Close removes it (unless SetUnlinkOnClose says
// not to: a handover leaves it for the successor).
type unixListener struct {
	*net.UnixListener
	addr   *net.UnixAddr
	unlink atomic.Bool
	once   sync.Once
}

func (l *unixListener) Addr() net.Addr { return l.addr }

// SetUnlinkOnClose says whether Close removes the socket's file, as
// net.UnixListener's does.
func (l *unixListener) SetUnlinkOnClose(unlink bool) { l.unlink.Store(unlink) }

func (l *unixListener) Close() error {
	err := l.UnixListener.Close()
	l.once.Do(func() {
		if l.unlink.Load() {
			_ = os.Remove(l.addr.Name)
		}
	})
	return err
}

// unixgramConn is a datagram socket renamed to its path: its LocalAddr
// is that path.
type unixgramConn struct {
	*net.UnixConn
	addr *net.UnixAddr
}

func (c *unixgramConn) LocalAddr() net.Addr { return c.addr }

// bindTemp binds a socket with bind under a new name in path's directory
// and returns that name. The name is hidden and says who made it, and
// is no longer than the room path leaves (a Firecracker VM's socket path
// is close to the limit).
func bindTemp(network, path string, bind func(name string) error) (string, error) {
	dir := filepath.Dir(path)
	room := maxUnixPath - len(dir) - 1
	var err error
	for range 10 {
		name := ".kt-" + randomName(8)
		if room < len(name) {
			name = randomName(max(room, 1))
		}
		name = filepath.Join(dir, name)
		if name == path {
			continue // a short room's name can be the path's own
		}
		if err = bind(name); err == nil {
			return name, nil
		}
		if !errors.Is(err, syscall.EADDRINUSE) { // a name taken: another
			break
		}
	}
	// Errors name the path asked for, not the temporary one.
	var oe *net.OpError
	if errors.As(err, &oe) {
		oe.Addr = &net.UnixAddr{Name: path, Net: network}
	}
	return "", err
}

func randomName(n int) string {
	const letters = "abcdefghijklmnopqrstuvwxyz0123456789"
	b := make([]byte, n)
	for i := range b {
		b[i] = letters[rand.IntN(len(letters))]
	}
	return string(b)
}

// place gives the socket bound at temp its path. Where nothing is, a hard
// link puts it there in one step that fails if something arrived
// meanwhile (the temporary name then goes); a stale socket is replaced in
// one step by rename(2). Between finding a socket stale and replacing it,
// another process could put a live one there, which the rename then
// replaces: only two processes that start on the same stale path at once
// could meet that, and the one replaced listens on, unreachable.
func place(network, temp, path string) error {
	inUse := &net.OpError{Op: "listen", Net: network, Addr: &net.UnixAddr{Name: path, Net: network},
		Err: os.NewSyscallError("bind", syscall.EADDRINUSE)}
	for range 3 {
		err := os.Link(temp, path)
		if err == nil {
			_ = os.Remove(temp)
			return nil
		}
		if !errors.Is(err, fs.ErrExist) {
			// A file system without hard links: check, then rename (the
			// check and the rename are two steps there).
			if _, serr := os.Lstat(path); errors.Is(serr, fs.ErrNotExist) {
				return os.Rename(temp, path)
			}
		}
		fi, err := os.Lstat(path)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			continue // gone meanwhile: try again
		case err != nil || fi.Mode()&os.ModeSocket == 0:
			return inUse
		}
		c, err := net.DialTimeout(network, path, time.Second)
		switch {
		case err == nil:
			_ = c.Close()
			return fmt.Errorf("%w: another process is listening there", inUse)
		case errors.Is(err, fs.ErrNotExist):
			continue
		case !errors.Is(err, syscall.ECONNREFUSED):
			return inUse
		}
		if err := os.Rename(temp, path); err != nil {
			return fmt.Errorf("%w (replacing the stale socket failed: %v)", inUse, err)
		}
		return nil
	}
	return inUse
}
