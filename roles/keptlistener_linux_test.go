package roles

import (
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"testing"

	"github.com/katatrace/katatrace/endpoint"
	"github.com/katatrace/katatrace/internal/testutil"
)

// TestKeptListenerRemovesItsPath: a listener taken from the store (as a
// successor takes its predecessor's) says the temporary name its socket
// was bound under (endpoint.Listen renames it into place); closed for
// good it still removes the socket's path, and closed for a handover it
// leaves it.
func TestKeptListenerRemovesItsPath(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "") // no store: Forget does nothing
	for _, tt := range []struct {
		name        string
		handingOver bool
	}{{"closed for good", false}, {"handed over", true}} {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(testutil.SockDir(t), "clh.sock_10240")
			a := testutil.Must(endpoint.ParseAddr("unix://" + path))
			pred, err := endpoint.Listen(a)
			if err != nil {
				t.Fatal(err)
			}
			f, err := pred.(interface{ File() (*os.File, error) }).File()
			if err != nil {
				t.Fatal(err)
			}
			pred.(interface{ SetUnlinkOnClose(bool) }).SetUnlinkOnClose(false) // the predecessor hands it over
			pred.Close()
			ln, err := endpoint.FileListener(f)
			f.Close()
			if err != nil {
				t.Fatal(err)
			}
			k := &keptListeners{log: slog.New(slog.DiscardHandler)}
			k.handingOver.Store(tt.handingOver)
			kl := &keptListener{Listener: ln, name: "kt-l.test", path: socketPath(a), k: k}
			if c, err := net.Dial("unix", path); err != nil {
				t.Fatalf("the taken listener does not serve its path: %v", err)
			} else {
				c.Close()
			}
			if err := kl.Close(); err != nil {
				t.Fatal(err)
			}
			_, err = os.Lstat(path)
			if kept := err == nil; kept != tt.handingOver {
				t.Fatalf("after Close the socket's file is there: %v, want %v (%v)", kept, tt.handingOver, err)
			}
		})
	}
}
