package roles

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"syscall"

	"github.com/katatrace/katatrace/endpoint"
)

// listenErr says which flag's address could not be listened on, why, and
// what usually fixes it.
func listenErr(flag string, a endpoint.Addr, err error) error {
	hint := ""
	switch {
	case errors.Is(err, syscall.EADDRINUSE):
		hint = "stop the process listening there (another relay?), or give another address"
	case errors.Is(err, syscall.ENOENT) && a.Scheme == endpoint.SchemeUnix && !exists(filepath.Dir(a.Path)):
		hint = "the directory does not exist: create it, or check the path (a VM's directory exists only while it runs)"
	case a.Scheme == endpoint.SchemeUnix && (errors.Is(err, syscall.EACCES) || errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.EROFS)):
		hint = endpoint.AccessHint(err) // as a watched VM's listener says it
	case endpoint.VsockRefused(a, err) != "":
		// A seccomp filter's or a security module's, not a port's.
		hint = endpoint.VsockRefused(a, err)
	case (errors.Is(err, syscall.EACCES) || errors.Is(err, syscall.EPERM)) && lowPort(a):
		hint = "a port below 1024 needs CAP_NET_BIND_SERVICE, which the shipped units do not have: give a port of 1024 or more"
	case errors.Is(err, syscall.EAFNOSUPPORT), errors.Is(err, syscall.ENODEV):
		hint = "this kernel offers no such socket: for vsock load the modules (vhost_vsock on a host; vsock and its transport in a guest)"
	case errors.Is(err, syscall.EADDRNOTAVAIL):
		hint = "no such address on this machine"
	}
	// The flag's address is named once: net's error restates it.
	var oe *net.OpError
	if errors.As(err, &oe) && error(oe) == err && oe.Err != nil {
		err = &bareError{oe.Op, oe.Err}
	}
	if hint != "" {
		return fmt.Errorf("--%s %s: cannot listen: %w; %s", flag, a, err, hint)
	}
	return fmt.Errorf("--%s %s: cannot listen: %w", flag, a, err)
}

// bareError is a net.OpError without its addresses.
type bareError struct {
	op  string
	err error
}

func (e *bareError) Error() string { return e.op + ": " + e.err.Error() }
func (e *bareError) Unwrap() error { return e.err }

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// lowPort reports whether a's port is below 1024, the ports binding
// needs CAP_NET_BIND_SERVICE for (vsock's too).
func lowPort(a endpoint.Addr) bool {
	switch a.Scheme {
	case endpoint.SchemeVsock:
		return a.Port < 1024
	case endpoint.SchemeTCP, endpoint.SchemeUDP:
		_, p, err := net.SplitHostPort(a.HostPort)
		n, err2 := strconv.ParseUint(p, 10, 16)
		return err == nil && err2 == nil && n < 1024
	}
	return false
}
