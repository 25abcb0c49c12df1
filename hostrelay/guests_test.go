package hostrelay

import (
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/katatrace/katatrace/endpoint"
	"github.com/katatrace/katatrace/internal/testutil"
	"github.com/katatrace/katatrace/wire"
)

// TestGuestsNamedBySandboxNotByProbes: a guest on a hybrid-vsock socket
// under Kata's run directory is named by its sandbox ID (in Guests and in
// the log), and a probe that connects and closes without a byte (another
// relay checking the socket) is no guest at all.
func TestGuestsNamedBySandboxNotByProbes(t *testing.T) {
	base := testutil.SockDir(t)
	var logs testutil.SyncBuffer
	srv := NewServer(ServerConfig{Kind: wire.KindJaeger, Sink: &memSink{}, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	defer srv.Shutdown(t.Context())
	listen := func(path string) {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		ln, err := endpoint.Listen(testutil.Must(endpoint.ParseAddr("unix://" + path)))
		if err != nil {
			t.Fatal(err)
		}
		go func() { _ = srv.Serve(ln, "unix://"+path) }()
	}
	vm := filepath.Join(base, "vc/firecracker/5e1f0c/root/kata.hvsock_6831")
	probed := filepath.Join(base, "other/h_6831")
	listen(vm)
	listen(probed)

	if acked := v2Peer(t, vm, 1, 1, []byte("a"), []byte("b")); acked != 3 {
		t.Fatalf("confirmed up to %d, want 3", acked)
	}
	c, err := net.Dial("unix", probed)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	testutil.Eventually(t, 5*time.Second, "the probe to be served", func() bool { return srv.Stats().Accepted == 2 && srv.Stats().Active == 0 })

	gs := srv.Guests()
	if len(gs) != 1 || gs[0].Sandbox != "5e1f0c" || gs[0].Datagrams != 2 {
		t.Fatalf("guests %+v; want one, sandbox 5e1f0c, 2 datagrams", gs)
	}
	if out := logs.String(); !strings.Contains(out, "sandbox=5e1f0c") || strings.Contains(out, "h_6831 pid") {
		t.Fatalf("logs:\n%s", out)
	}
}
