package endpoint

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/katatrace/katatrace/internal/testutil"
)

func TestListenUnixReplacesStaleSocket(t *testing.T) {
	path := filepath.Join(testutil.SockDir(t), "stale")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close() // leaves the file, as a killed process would
	a := mustParseAddr("unix://" + path)
	ln2, err := Listen(a)
	if err != nil {
		t.Fatalf("stale socket not replaced: %v", err)
	}
	defer ln2.Close()
	if _, err := Listen(a); err == nil || !strings.Contains(err.Error(), "another process is listening") {
		t.Fatalf("second listener on a live socket: %v", err)
	}
	if _, err := os.Stat(path); err != nil {
		t.Fatal(err)
	}
}
