// Package sandboxid finds the Kata sandbox a guest connection belongs to,
// where the host can know it: a hybrid-vsock socket's path holds the
// sandbox ID (see FromPath for the trees of both runtimes), and a
// vhost-vsock guest's CID is on its VMM's command line (guest-cid=N)
// beside the sandbox's name (-name sandbox-ID). Logs and metrics then
// name VMs as Kata does.
package sandboxid

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// FromPath is the sandbox ID in a hybrid-vsock socket's path under Kata's
// run directories, or "". Where Kata (4.1) puts a VM's socket:
//
//	Go runtime (/run/vc)
//	  Firecracker        /run/vc/firecracker/ID/root/kata.hvsock
//	  Cloud Hypervisor   /run/vc/vm/ID/clh.sock
//	runtime-rs (/run/kata; rootless: $XDG_RUNTIME_DIR/run/kata)
//	  Dragonball         /run/kata/ID/root/kata.hvsock
//	  Cloud Hypervisor   /run/kata/ID/ch-vm.sock
//	  Firecracker        /run/kata/firecracker/ID/root/kata.hvsock (jailed)
//	                     /run/kata/ID/kata.hvsock
//	  OpenVMM            /run/kata/ID/vsock.sock
//
// The ID is a directory, never the socket's name: a path must go on past it.
func FromPath(path string) string {
	parts := strings.Split(filepath.Clean(path), "/")
	for i := 0; i+2 < len(parts); i++ {
		id := ""
		switch {
		case parts[i] == "vc" && (parts[i+1] == "firecracker" || parts[i+1] == "vm") && i+3 < len(parts):
			id = parts[i+2]
		// "kata" alone is too common a name: runtime-rs's is run/kata.
		case parts[i] == "kata" && i > 0 && parts[i-1] == "run":
			id = parts[i+1]
			if id == "firecracker" {
				if i+3 >= len(parts) {
					continue
				}
				id = parts[i+2]
			}
		default:
			continue
		}
		if plausible(id) {
			return id
		}
	}
	return ""
}

// plausible reports whether s can be a sandbox ID: what Kata makes them of
// (hex, or a container runtime's letters, digits, '-', '_', '.').
func plausible(s string) bool {
	if s == "" || len(s) > 256 || s == "." || s == ".." {
		return false
	}
	for _, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_', r == '.':
		default:
			return false
		}
	}
	return true
}

// FromCID looks for the VMM whose vhost-vsock device has guest CID cid
// among the processes this one may see (a sandboxed unit with
// ProtectProc=invisible sees none of root's: then ""), and returns the
// sandbox ID from its -name sandbox-ID. procRoot is /proc, but for tests.
func FromCID(procRoot string, cid uint32) string {
	entries, err := os.ReadDir(procRoot)
	if err != nil {
		return ""
	}
	want := []byte("guest-cid=" + strconv.FormatUint(uint64(cid), 10))
	for _, e := range entries {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join(procRoot, e.Name(), "cmdline"))
		if err != nil || !bytes.Contains(b, want) {
			continue
		}
		if id := fromCmdline(bytes.Split(bytes.TrimRight(b, "\x00"), []byte{0}), want); id != "" {
			return id
		}
	}
	return ""
}

// fromCmdline reads a VMM's arguments: a device option guest-cid=N
// exactly (not N0), and -name sandbox-ID[,option…].
func fromCmdline(args [][]byte, cid []byte) string {
	found, id := false, ""
	for i, a := range args {
		for _, opt := range bytes.Split(a, []byte{','}) {
			if bytes.Equal(opt, cid) {
				found = true
			}
		}
		if string(a) == "-name" && i+1 < len(args) {
			name, _, _ := strings.Cut(string(args[i+1]), ",")
			name = strings.TrimPrefix(name, "guest=") // -name guest=NAME,…
			if s, ok := strings.CutPrefix(name, "sandbox-"); ok && plausible(s) {
				id = s
			}
		}
	}
	if !found {
		return ""
	}
	return id
}
