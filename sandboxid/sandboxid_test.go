package sandboxid

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestFromPath(t *testing.T) {
	for _, tt := range []struct{ name, path, want string }{
		{"go firecracker", "/run/vc/firecracker/3f2a9c/root/kata.hvsock_6831", "3f2a9c"},
		{"go cloud hypervisor", "/run/vc/vm/abc-123/clh.sock_10240", "abc-123"},
		{"rs dragonball", "/run/kata/x_y.z/root/kata.hvsock_10240", "x_y.z"},
		{"rs cloud hypervisor", "/run/kata/5e1f/ch-vm.sock_10240", "5e1f"},
		{"rs firecracker jailed", "/run/kata/firecracker/77ab/root/kata.hvsock_10240", "77ab"},
		{"rs firecracker", "/run/kata/77ab/kata.hvsock_10240", "77ab"},
		{"rs openvmm", "/run/kata/9c0d/vsock.sock_10240", "9c0d"},
		{"rs rootless", "/run/user/1000/run/kata/77ab/ch-vm.sock_10240", "77ab"},
		{"var/run", "/var/run/kata/77ab/ch-vm.sock_10240", "77ab"},
		{"unclean", "/run//kata/./77ab/ch-vm.sock_10240", "77ab"},
		{"go, another tree", "/run/vc/other/abc/kata.hvsock_6831", ""},
		{"no vc dragonball", "/run/vc/dragonball/abc/root/kata.hvsock_6831", ""},
		{"kata not under run", "/var/lib/kata/abc/x.sock_10240", ""},
		{"kata-containers", "/run/kata-containers/abc/x.sock_10240", ""},
		{"elsewhere", "/tmp/k/h_6831", ""},
		{"dot-dot", "/run/vc/vm/../x", ""},
		{"dot-dot kata", "/run/kata/../x", ""},
		{"no ID", "/run/vc/firecracker", ""},
		{"ID only, go", "/run/vc/vm/abc", ""},
		{"socket in /run/kata", "/run/kata/kata.hvsock_10240", ""},
		{"firecracker dir only", "/run/kata/firecracker/kata.hvsock_10240", ""},
		{"implausible", "/run/kata/a b/ch-vm.sock_10240", ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := FromPath(tt.path); got != tt.want {
				t.Errorf("FromPath(%q) = %q, want %q", tt.path, got, tt.want)
			}
		})
	}
}

// fakeProc writes a /proc of one process with these arguments.
func fakeProc(t *testing.T, args ...string) string {
	root := t.TempDir()
	dir := filepath.Join(root, "4242")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "cmdline"), []byte(strings.Join(args, "\x00")+"\x00"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(root, "self"), 0o755); err != nil {
		t.Fatal(err)
	}
	return root
}

func TestFromCID(t *testing.T) {
	qemu := []string{"/usr/bin/qemu-system-x86_64", "-name", "sandbox-5e1f,debug-threads=on", "-uuid", "x",
		"-device", "vhost-vsock-pci,disable-modern=false,vhostfd=3,id=vsock-1,guest-cid=3,romfile="}
	proc := fakeProc(t, qemu...)
	for _, tt := range []struct {
		cid  uint32
		want string
	}{{3, "5e1f"}, {30, ""}, {4, ""}} {
		if got := FromCID(proc, tt.cid); got != tt.want {
			t.Errorf("FromCID(%d) = %q, want %q", tt.cid, got, tt.want)
		}
	}
	if got := FromCID(fakeProc(t, "/usr/bin/qemu", "-device", "vhost-vsock-pci,guest-cid=3"), 3); got != "" {
		t.Errorf("a VMM without a sandbox name: %q", got)
	}
	if got := FromCID(filepath.Join(t.TempDir(), "none"), 3); got != "" {
		t.Errorf("no /proc: %q", got)
	}
}

func FuzzFromPath(f *testing.F) {
	f.Add("/run/vc/firecracker/3f2a9c/root/kata.hvsock_6831")
	f.Add("/run/vc/vm/abc-123/clh.sock_6831")
	f.Add("/run/kata/firecracker/77ab/root/kata.hvsock_10240")
	f.Add("/run/kata/5e1f/ch-vm.sock_10240")
	f.Fuzz(func(t *testing.T, p string) {
		if id := FromPath(p); id != "" && !plausible(id) {
			t.Fatalf("FromPath(%q) = %q, not a plausible ID", p, id)
		}
	})
}
