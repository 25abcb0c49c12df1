package hostrelay

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/katatrace/katatrace/endpoint"
	"github.com/katatrace/katatrace/internal/testutil"
	"github.com/katatrace/katatrace/wire"
)

// watchHost serves every listener a Watch makes, as the host roles do.
func watchHost(t *testing.T, pattern string) (*endpoint.Watch, *memSink) {
	t.Helper()
	sink := &memSink{}
	srv := NewServer(ServerConfig{Kind: wire.KindJaeger, Sink: sink, Logger: testLogger(t)})
	var wg sync.WaitGroup
	w, err := endpoint.WatchPattern(pattern, testLogger(t), nil, func(ln net.Listener, path string) {
		wg.Add(1)
		go func() { defer wg.Done(); _ = srv.Serve(ln, "unix://"+path) }()
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = w.Close(); wg.Wait() })
	return w, sink
}

// deliver sends one datagram as a guest through the socket at path.
func deliver(t *testing.T, path string, p []byte) error {
	c, err := net.Dial("unix", path)
	if err != nil {
		return err
	}
	defer c.Close()
	if _, err := c.Write(wire.AppendFrame(wire.AppendHello(nil, wire.KindJaeger), p)); err != nil {
		return err
	}
	return nil
}

func TestWatchFindsVMsAsTheyCome(t *testing.T) {
	base := filepath.Join(testutil.SockDir(t), "firecracker") // not there yet
	w, sink := watchHost(t, base+"/*/root/kata.hvsock_6831")
	if n := w.Listening(); n != 0 {
		t.Fatalf("listening on %d before any VM", n)
	}
	vm := func(id string) string { return filepath.Join(base, id, "root", "kata.hvsock_6831") }
	for _, id := range []string{"vm1", "vm2"} {
		testutil.VMMSocket(t, filepath.Join(base, id, "root", "kata.hvsock"))
	}
	testutil.Eventually(t, 10*time.Second, "both VMs' listeners", func() bool { return w.Listening() == 2 })
	for _, id := range []string{"vm1", "vm2"} {
		if err := deliver(t, vm(id), []byte(id)); err != nil {
			t.Fatalf("%s: %v", id, err)
		}
	}
	// vm1 goes; vm2 still serves, and a third comes.
	if err := os.RemoveAll(filepath.Join(base, "vm1")); err != nil {
		t.Fatal(err)
	}
	testutil.VMMSocket(t, filepath.Join(base, "vm3", "root", "kata.hvsock"))
	testutil.Eventually(t, 10*time.Second, "vm1 gone, vm3 found", func() bool {
		_, err := os.Stat(vm("vm3"))
		return w.Listening() == 2 && err == nil
	})
	for _, id := range []string{"vm2", "vm3"} {
		if err := deliver(t, vm(id), []byte(id+"-again")); err != nil {
			t.Fatalf("%s after vm1 went: %v", id, err)
		}
	}
	testutil.Eventually(t, 10*time.Second, "4 datagrams", func() bool { return sink.total() == 4 })
}

// TestWatchWaitsForTheVMMsSocket: a pattern with a glob and a
// hybrid-vsock name makes its listener in a VM's directory only once the
// VMM's own socket is there (the path without _PORT), none in a sibling
// directory without one, and retires it when the VMM's socket goes while
// the directory stays; Missing names the VMM's socket while none is there.
func TestWatchWaitsForTheVMMsSocket(t *testing.T) {
	base := filepath.Join(testutil.SockDir(t), "vc")
	pattern := base + "/*/root/kata.hvsock_6831"
	w, sink := watchHost(t, pattern)
	sock := func(id, name string) string { return filepath.Join(base, id, "root", name) }
	for _, id := range []string{"vm1", "other"} {
		if err := os.MkdirAll(sock(id, ""), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// Both directories are seen (watched) before the VMM's socket comes:
	// the rescan that finds vm1's would find a stray listener in both.
	testutil.Eventually(t, 10*time.Second, "the VM directories named missing their VMM's socket", func() bool {
		return w.Missing() == base+"/*/root/kata.hvsock"
	})
	if n := w.Listening(); n != 0 {
		t.Fatalf("listening on %d before any VMM's socket", n)
	}
	testutil.VMMSocket(t, sock("vm1", "kata.hvsock"))
	testutil.Eventually(t, 10*time.Second, "vm1's listener", func() bool { return w.Listening() == 1 })
	if err := deliver(t, sock("vm1", "kata.hvsock_6831"), []byte("vm1")); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(sock("other", "kata.hvsock_6831")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a socket in a directory with no VMM's socket: %v", err)
	}
	if m := w.Missing(); m != "" {
		t.Fatalf("Missing %q with a VM there", m)
	}
	// The VMM goes, its directory stays (Kata removes it later).
	if err := os.Remove(sock("vm1", "kata.hvsock")); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, "vm1's listener retired", func() bool {
		_, err := os.Lstat(sock("vm1", "kata.hvsock_6831"))
		return w.Listening() == 0 && errors.Is(err, os.ErrNotExist)
	})
	testutil.Eventually(t, 10*time.Second, "the datagram", func() bool { return sink.total() == 1 })
}

// TestWatchListensAtOnceWithoutAVMMName: a plain path (no glob), and a
// pattern whose socket's name has no _PORT (someone's own naming), listen
// as soon as their directory is there, with no VMM's socket beside.
func TestWatchListensAtOnceWithoutAVMMName(t *testing.T) {
	for _, tt := range []struct{ name, pattern, path string }{
		{"plain path", "vm1/clh.sock_10240", "vm1/clh.sock_10240"},
		{"no _PORT", "*/relay.sock", "vm1/relay.sock"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			base := filepath.Join(testutil.SockDir(t), "vc")
			w, sink := watchHost(t, filepath.Join(base, tt.pattern))
			path := filepath.Join(base, tt.path)
			if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
				t.Fatal(err)
			}
			testutil.Eventually(t, 10*time.Second, "a listener", func() bool { return w.Listening() == 1 })
			if err := deliver(t, path, []byte("x")); err != nil {
				t.Fatal(err)
			}
			testutil.Eventually(t, 10*time.Second, "the datagram", func() bool { return sink.total() == 1 })
		})
	}
}

// TestWatchTakesAGoneVMsBacklog: a connection a guest made just before
// its VM's directory went, not accepted yet, is still served.
func TestWatchTakesAGoneVMsBacklog(t *testing.T) {
	base := filepath.Join(testutil.SockDir(t), "firecracker")
	path := filepath.Join(base, "vm1", "root", "kata.hvsock_6831")
	testutil.VMMSocket(t, filepath.Join(base, "vm1", "root", "kata.hvsock"))
	// Nothing accepts until the VM is gone: its connection waits in the
	// backlog, as one does when the VM goes between connect and accept.
	lns := make(chan net.Listener, 1)
	w, err := endpoint.WatchPattern(base+"/*/root/kata.hvsock_6831", testLogger(t), nil, func(ln net.Listener, _ string) { lns <- ln })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = w.Close() })
	ln := <-lns
	if err := deliver(t, path, []byte("last spans")); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(filepath.Join(base, "vm1")); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, "vm1's listener closed", func() bool { return w.Listening() == 0 })
	sink := &memSink{}
	srv := NewServer(ServerConfig{Kind: wire.KindJaeger, Sink: sink, Logger: testLogger(t)})
	if err := srv.Serve(ln, "unix://"+path); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Serve on a gone VM's listener: %v, want it closed", err)
	}
	testutil.Eventually(t, 10*time.Second, "the datagram sent before the VM went", func() bool { return sink.total() == 1 })
	if _, err := net.Dial("unix", path); err == nil {
		t.Fatal("a gone VM's socket still accepts")
	}
}

// TestWatchMeasure measures, for the record (nothing timed is asserted):
// from a VM's directory and VMM socket appearing to its listener accepting, over 100 VMs,
// and the process's memory with 1,000 VM directories watched.
func TestWatchMeasure(t *testing.T) {
	if testing.Short() {
		t.Skip("a measurement")
	}
	base := filepath.Join(testutil.SockDir(t), "fc")
	w, _ := watchHost(t, base+"/*/root/kata.hvsock_6831")
	rss0 := rssKB(t)
	var lat []time.Duration
	for i := range 1000 {
		dir := filepath.Join(base, strconv.Itoa(i), "root")
		start := time.Now()
		testutil.VMMSocket(t, filepath.Join(dir, "kata.hvsock"))
		if i >= 100 {
			continue
		}
		path := filepath.Join(dir, "kata.hvsock_6831")
		for {
			c, err := net.Dial("unix", path)
			if err == nil {
				c.Close()
				break
			}
			if time.Since(start) > 10*time.Second {
				t.Fatalf("VM %d: no listener after 10s", i)
			}
			time.Sleep(100 * time.Microsecond)
		}
		lat = append(lat, time.Since(start))
	}
	testutil.Eventually(t, 60*time.Second, "1,000 listeners", func() bool { return w.Listening() == 1000 })
	slices.Sort(lat)
	t.Logf("VMM's socket to accepting listener over 100 VMs: p50 %v, p99 %v; RSS %d kB before, %d kB with 1,000 VM directories watched and listening",
		lat[49].Round(time.Microsecond), lat[98].Round(time.Microsecond), rss0, rssKB(t))
}

func rssKB(t *testing.T) int {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Skip("no /proc/self/status")
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmRSS:" {
			n, _ := strconv.Atoi(f[1])
			return n
		}
	}
	t.Fatalf("no VmRSS in %s", b)
	return 0
}
