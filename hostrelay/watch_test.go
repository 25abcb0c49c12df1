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
		if err := os.MkdirAll(filepath.Dir(vm(id)), 0o755); err != nil {
			t.Fatal(err)
		}
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
	if err := os.MkdirAll(filepath.Dir(vm("vm3")), 0o755); err != nil {
		t.Fatal(err)
	}
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

// TestWatchTakesAGoneVMsBacklog: a connection a guest made just before
// its VM's directory went, not accepted yet, is still served.
func TestWatchTakesAGoneVMsBacklog(t *testing.T) {
	base := filepath.Join(testutil.SockDir(t), "firecracker")
	path := filepath.Join(base, "vm1", "root", "kata.hvsock_6831")
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
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
// from a VM directory appearing to its listener accepting, over 100 VMs,
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
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
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
	t.Logf("directory to accepting listener over 100 VMs: p50 %v, p99 %v; RSS %d kB before, %d kB with 1,000 VM directories watched and listening",
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
