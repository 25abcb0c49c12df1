package hostrelay

import (
	"net"
	"os"
	"path/filepath"
	"testing"

	"github.com/katatrace/katatrace/wire"
	"github.com/mdlayher/vsock"
)

// vsockPeer is a connection whose peer is a vsock guest, as a vsock
// listener's are (no vsock socket is made).
type vsockPeer struct {
	net.Conn
	cid uint32
}

func (c vsockPeer) RemoteAddr() net.Addr { return &vsock.Addr{ContextID: c.cid, Port: 1024} }

// TestSandboxFromProcRoot: a vsock guest's sandbox ID is read from its
// VMM's command line where ProcRoot says the host's processes are (a
// container's mount of the node's /proc), and from /proc without it.
func TestSandboxFromProcRoot(t *testing.T) {
	proc := t.TempDir()
	if err := os.Mkdir(filepath.Join(proc, "4242"), 0o755); err != nil {
		t.Fatal(err)
	}
	cmdline := "/usr/bin/qemu-system-x86_64\x00-name\x00sandbox-5e1f,debug-threads=on\x00-device\x00vhost-vsock-pci,id=vsock-1,guest-cid=1234567\x00"
	if err := os.WriteFile(filepath.Join(proc, "4242", "cmdline"), []byte(cmdline), 0o644); err != nil {
		t.Fatal(err)
	}
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	conn := vsockPeer{a, 1234567}
	for _, tt := range []struct{ root, want string }{{proc, "5e1f"}, {"", ""}} {
		srv := NewServer(ServerConfig{Kind: wire.KindJaeger, Sink: &memSink{}, Logger: testLogger(t), ProcRoot: tt.root})
		if got := srv.sandboxOf(conn, "vsock://any:10240"); got != tt.want {
			t.Errorf("ProcRoot %q: sandbox %q, want %q", tt.root, got, tt.want)
		}
	}
}
