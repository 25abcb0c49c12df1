package endpoint

import (
	"path/filepath"
	"strconv"
	"strings"
)

// Hybrid vsock (Firecracker, Cloud Hypervisor, Dragonball, OpenVMM): the
// VMM listens on one unix socket of its own, and a guest's connection to
// host port PORT comes to a socket at that path plus "_PORT", which
// whoever serves the port makes.

// vmmSockets are the names Kata gives a VMM's own hybrid-vsock socket
// (Kata's sources, 2.2 to 4.1), and whose.
var vmmSockets = map[string]string{
	"kata.hvsock": "Firecracker, Dragonball",          // runtime fc.go; runtime-rs DEFAULT_HYBRID_VSOCK_NAME
	"clh.sock":    "Cloud Hypervisor, the Go runtime", // runtime clh.go clhSocket
	"ch-vm.sock":  "Cloud Hypervisor, runtime-rs",     // runtime-rs ch/utils.rs CH_VM_SOCKET_NAME
	"vsock.sock":  "OpenVMM, runtime-rs",              // runtime-rs openvmm/inner_hypervisor.rs get_agent_socket (4.1)
}

// cutPort splits a socket name at a "_PORT" suffix: "kata.hvsock_10240"
// is "kata.hvsock", 10240, true.
func cutPort(name string) (vmm string, port uint32, ok bool) {
	i := strings.LastIndexByte(name, '_')
	if i <= 0 {
		return "", 0, false
	}
	n, err := strconv.ParseUint(name[i+1:], 10, 32)
	if err != nil {
		return "", 0, false
	}
	return name[:i], uint32(n), true
}

// VMMSocket is the VMM's own socket beside a hybrid-vsock path: the path
// without its "_PORT" suffix ("/run/vc/vm/ID/clh.sock" of
// ".../clh.sock_10240"), or "" when its name has no such suffix.
func VMMSocket(path string) string {
	dir, name := filepath.Split(path)
	vmm, _, ok := cutPort(name)
	if !ok {
		return ""
	}
	return dir + vmm
}

// CheckNotVMMSocket reports an error when a unix address is a VMM's own
// hybrid-vsock socket (its name one of Kata's, no "_PORT"): listening
// there would take the VMM's place (or, for a pattern, make a socket at
// that path in every VM directory) and no guest would connect to it. The
// error names the address with port, the caller's (a role's own).
func (a Addr) CheckNotVMMSocket(port uint32) error {
	if a.Scheme != SchemeUnix {
		return nil
	}
	name := filepath.Base(a.Path)
	who, ok := vmmSockets[name]
	if !ok {
		return nil
	}
	if name == "vsock.sock" && !strings.Contains(a.Path, "/kata/") {
		// A name common outside Kata: OpenVMM's only in Kata's run tree.
		return nil
	}
	return addrErr(a.String(), a.Scheme, "%s is the VMM's own hybrid-vsock socket (%s): a guest's connections to port %d come to %s_%d", name, who, port, a, port)
}
