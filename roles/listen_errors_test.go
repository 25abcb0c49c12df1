package roles

import (
	"net"
	"os"
	"strings"
	"syscall"
	"testing"

	"github.com/katatrace/katatrace/endpoint"
)

// TestListenErrSaysWhatToChange: each refusal a unix --from meets on a
// host names its cause and what to change; a sandboxed unit's
// read-only tree (ProtectSystem=strict without ReadWritePaths=) is said as
// that, not as an unexplained "read-only file system".
func TestListenErrSaysWhatToChange(t *testing.T) {
	a := endpoint.Addr{Scheme: endpoint.SchemeUnix, Path: "/run/vc/vm/5e1f/clh.sock_10240"}
	for _, tt := range []struct {
		name string
		err  syscall.Errno
		want string
	}{
		{"in use", syscall.EADDRINUSE, "stop the process listening there"},
		{"permission", syscall.EACCES, "root's, mode 0750: run as root"},
		{"read-only", syscall.EROFS, "read-only to this process: give a sandboxed unit the tree in ReadWritePaths="},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := listenErr("from", a, &net.OpError{Op: "listen", Net: "unix", Err: os.NewSyscallError("bind", tt.err)})
			if s := err.Error(); !strings.HasPrefix(s, "--from unix:///run/vc/vm/5e1f/clh.sock_10240: cannot listen: listen: bind: ") || !strings.Contains(s, tt.want) {
				t.Errorf("%v", s)
			}
		})
	}
}

// TestListenErrOnAPort: a TCP port refused for permission is a port
// below 1024 without the capability, not a Kata VM directory's mode.
func TestListenErrOnAPort(t *testing.T) {
	a := endpoint.Addr{Scheme: endpoint.SchemeTCP, HostPort: "127.0.0.1:81"}
	err := listenErr("from", a, &net.OpError{Op: "listen", Net: "tcp", Err: os.NewSyscallError("bind", syscall.EACCES)})
	if s := err.Error(); !strings.Contains(s, "CAP_NET_BIND_SERVICE") || strings.Contains(s, "0750") {
		t.Errorf("%v", s)
	}
}

// TestListenErrVsockRefusedBySeccomp: a vsock socket refused at its
// making is a seccomp profile's doing (a container's default) with EPERM,
// AppArmor's or SELinux's with EACCES, not a port's privilege; a vsock
// port below 1024 refused at bind still is, one of 1024 or more never.
func TestListenErrVsockRefusedBySeccomp(t *testing.T) {
	for _, tt := range []struct {
		name, syscall string
		errno         syscall.Errno
		port          uint32
		want, not     string
	}{
		{"socket refused", "socket", syscall.EPERM, 10240, "seccomp filter refuses vsock sockets", "CAP_NET_BIND_SERVICE"},
		{"socket refused by a policy", "socket", syscall.EACCES, 10240, "a security policy (AppArmor or SELinux) refuses vsock sockets", "CAP_NET_BIND_SERVICE"},
		{"low port", "bind", syscall.EACCES, 1000, "CAP_NET_BIND_SERVICE", "seccomp"},
		{"high port", "bind", syscall.EACCES, 10240, "cannot listen", "CAP_NET_BIND_SERVICE"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			a := endpoint.Addr{Scheme: endpoint.SchemeVsock, AnyCID: true, Port: tt.port}
			err := listenErr("from", a, &net.OpError{Op: "listen", Net: "vsock", Err: os.NewSyscallError(tt.syscall, tt.errno)})
			if s := err.Error(); !strings.Contains(s, tt.want) || strings.Contains(s, tt.not) {
				t.Errorf("%v", s)
			}
		})
	}
}
