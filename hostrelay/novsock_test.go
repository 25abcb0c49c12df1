package hostrelay

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/katatrace/katatrace/endpoint"
	"github.com/katatrace/katatrace/internal/testutil"
	"github.com/katatrace/katatrace/wire"
)

// TestNoVsockLeavesHybridServing: on a kernel without vsock, or where a
// sandbox refuses vsock sockets (a container's seccomp profile: EPERM; a
// security module: EACCES) (the seam: the vsock listen fails as
// socket(AF_VSOCK) does there), a host whose other --from is a
// hybrid-vsock pattern serves its VMs, and says the vsock --from listens
// on nothing; with no --from but vsock ones, or a vsock failure that is
// not the kernel's nor the sandbox's (the port taken, a bind refused), it
// fails as before. roles' TestVsockRefusedBySeccompLeavesOthersServing
// does the same under a real seccomp filter.
func TestNoVsockLeavesHybridServing(t *testing.T) {
	vsock := testutil.Must(endpoint.ParseAddr("vsock://any:10240"))
	listen := func(call string, fail syscall.Errno) func(endpoint.Addr) (net.Listener, error) {
		return func(a endpoint.Addr) (net.Listener, error) {
			if a.Scheme == endpoint.SchemeVsock {
				return nil, os.NewSyscallError(call, fail)
			}
			return endpoint.Listen(a)
		}
	}
	host := func(t *testing.T, call string, fail syscall.Errno, from ...endpoint.Addr) (*Host, *memSink, chan error) {
		out := &memSink{}
		h := NewHost(HostConfig{
			Server: ServerConfig{Kind: wire.KindJaeger, Sink: out},
			From:   from, To: "test", DrainTimeout: time.Second, Logger: testLogger(t), Listen: listen(call, fail),
		})
		ctx, cancel := context.WithCancel(context.Background())
		ran := make(chan error, 1)
		go func() { ran <- h.Run(ctx) }()
		t.Cleanup(func() { cancel(); <-ran })
		return h, out, ran
	}

	for _, fail := range []syscall.Errno{syscall.EAFNOSUPPORT, syscall.ENODEV, syscall.EPERM, syscall.EACCES} {
		t.Run("hybrid serves, vsock's socket "+fail.Error(), func(t *testing.T) {
			base := testutil.SockDir(t)
			pattern := testutil.Must(endpoint.ParseAddr("unix://" + base + "/*/clh.sock_10240"))
			h, out, ran := host(t, "socket", fail, vsock, pattern)
			if err := os.Mkdir(filepath.Join(base, "5e1f"), 0o750); err != nil {
				t.Fatal(err)
			}
			testutil.VMMSocket(t, filepath.Join(base, "5e1f", "clh.sock"))
			path := filepath.Join(base, "5e1f", "clh.sock_10240")
			testutil.Eventually(t, 10*time.Second, "the VM's listener", func() bool { return h.Listening()[pattern.String()] == 1 })
			if err := deliver(t, path, []byte("span")); err != nil {
				t.Fatal(err)
			}
			testutil.Eventually(t, 10*time.Second, "the VM's datagram", func() bool { return out.total() == 1 })
			if n, ok := h.Listening()[vsock.String()]; !ok || n != 0 {
				t.Errorf("the vsock --from: listening %d (known %v), want 0", n, ok)
			}
			select {
			case err := <-ran:
				t.Fatalf("Run ended: %v", err)
			default:
			}
		})
	}
	for _, tt := range []struct {
		name, call string
		fail       syscall.Errno
		from       []endpoint.Addr
	}{
		{"vsock alone", "socket", syscall.EAFNOSUPPORT, []endpoint.Addr{vsock}},
		{"vsock alone, refused", "socket", syscall.EPERM, []endpoint.Addr{vsock}},
		{"vsock twice, nothing else", "socket", syscall.EAFNOSUPPORT, []endpoint.Addr{vsock, testutil.Must(endpoint.ParseAddr("vsock://any:6831"))}},
		{"vsock twice, refused", "socket", syscall.EPERM, []endpoint.Addr{vsock, testutil.Must(endpoint.ParseAddr("vsock://any:6831"))}},
		{"port taken", "bind", syscall.EADDRINUSE, []endpoint.Addr{vsock, testutil.Must(endpoint.ParseAddr("unix://" + filepath.Join(os.TempDir(), "none", "*", "x_10240")))}},
		{"bind refused", "bind", syscall.EACCES, []endpoint.Addr{vsock, testutil.Must(endpoint.ParseAddr("unix://" + filepath.Join(os.TempDir(), "none", "*", "x_10240")))}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, _, ran := host(t, tt.call, tt.fail, tt.from...)
			var le *ListenError
			select {
			case err := <-ran:
				if !errors.As(err, &le) || le.Addr != vsock || !strings.Contains(err.Error(), tt.fail.Error()) {
					t.Errorf("Run: %v, want the vsock --from's ListenError", err)
				}
				ran <- err // for the cleanup
			case <-time.After(10 * time.Second):
				t.Fatal("Run serves on")
			}
		})
	}
}
