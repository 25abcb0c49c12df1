package endpoint

import (
	"errors"
	"os"
	"syscall"
)

// VsockRefused is what to do when the making of a's vsock socket was
// refused by this process's sandbox, not by the kernel's lack of vsock
// nor for the address; "" for any other failure. socket(AF_VSOCK) takes
// no privilege, so a refusal of that call is a policy's: EPERM a seccomp
// filter's (containerd's default profile refuses the family, as recent
// releases of CRI-O's and Podman's do),
// EACCES a Linux security module's.
func VsockRefused(a Addr, err error) string {
	var se *os.SyscallError
	if a.Scheme != SchemeVsock || !errors.As(err, &se) || se.Syscall != "socket" {
		return ""
	}
	switch {
	case errors.Is(err, syscall.EPERM):
		return "a seccomp filter refuses vsock sockets (a container runtime's default profile does): run with a profile that allows socket(AF_VSOCK), or leave this --from out where no QEMU guest runs"
	case errors.Is(err, syscall.EACCES):
		return "a security policy (AppArmor or SELinux) refuses vsock sockets: allow this process to make them, or leave this --from out where no QEMU guest runs"
	}
	return ""
}
