package handover

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// pair is a connected unix stream pair: one end kept by the store, the
// other the test's (a guest).
func pair(t *testing.T) (kept *net.UnixConn, peer *net.UnixConn) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	conn := func(fd int) *net.UnixConn {
		f := os.NewFile(uintptr(fd), "pair")
		defer f.Close()
		c, err := net.FileConn(f)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c.(*net.UnixConn)
	}
	return conn(fds[0]), conn(fds[1])
}

func quiet() *slog.Logger { return slog.New(slog.DiscardHandler) }

func newOffer(t *testing.T, path, role string) (*Offer, chan struct{}) {
	t.Helper()
	asked := make(chan struct{})
	o, err := NewOffer(path, role, quiet(), func() { close(asked) })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { o.Close() })
	return o, asked
}

// TestHandover: a store of many sockets (more than one message's worth)
// reaches the successor whole, by name, and the sockets are the same:
// what a guest writes after the handover is read from the successor's
// copy, once the predecessor's are closed.
func TestHandover(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "run", "forwarder.sock")
	s := NewStore(nil)
	defer s.Close()
	const n = perMessage*2 + 3
	peers := map[string]*net.UnixConn{}
	for i := range n {
		kept, peer := pair(t)
		name := "kt-m." + strconv.Itoa(i)
		if err := s.Keep(name, kept); err != nil {
			t.Fatal(err)
		}
		kept.Close() // the store's copy alone holds it now
		peers[name] = peer
	}
	if s.Len() != n {
		t.Fatalf("store holds %d, want %d", s.Len(), n)
	}
	o, asked := newOffer(t, path, "kata-trace-forwarder")
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("the handover socket: %v, mode %v (want 0600)", err, fi.Mode().Perm())
	}
	var (
		files map[string]*os.File
		pid   int
		terr  error
		wg    sync.WaitGroup
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		files, pid, terr = Take(ctx, path, "kata-trace-forwarder")
	}()
	select {
	case <-asked:
	case <-time.After(10 * time.Second):
		t.Fatal("the offer was never asked")
	}
	if err := o.Give(context.Background(), s); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	if terr != nil {
		t.Fatal(terr)
	}
	if pid != os.Getpid() || len(files) != n {
		t.Fatalf("took %d descriptors from pid %d, want %d from %d", len(files), pid, n, os.Getpid())
	}
	s.Close()
	for name, peer := range peers {
		f := files[name]
		if f == nil {
			t.Fatalf("%s not handed over", name)
		}
		c, err := net.FileConn(f)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := peer.Write([]byte(name)); err != nil {
			t.Fatal(err)
		}
		b := make([]byte, len(name))
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.ReadFull(c, b); err != nil || string(b) != name {
			t.Fatalf("%s: read %q, %v", name, b, err)
		}
		c.Close()
		// Every copy closed: the guest sees its connection end.
		_ = peer.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := peer.Read(b); err != io.EOF {
			t.Fatalf("%s: a copy is still open somewhere (read: %v)", name, err)
		}
	}
	// Asked again: it handed over already.
	_, _, err := Take(context.Background(), path, "kata-trace-forwarder")
	if err == nil || !strings.Contains(err.Error(), "handed over already") {
		t.Fatalf("a second successor: %v", err)
	}
}

// TestTakeNobody: no socket, or a stale one, is no predecessor.
func TestTakeNobody(t *testing.T) {
	dir := t.TempDir()
	files, _, err := Take(context.Background(), filepath.Join(dir, "missing.sock"), "r")
	if files != nil || err != nil {
		t.Fatalf("no socket: %v, %v", files, err)
	}
	stale := filepath.Join(dir, "stale.sock")
	ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: stale, Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close()
	files, _, err = Take(context.Background(), stale, "r")
	if files != nil || err != nil {
		t.Fatalf("a stale socket: %v, %v", files, err)
	}
	// A new offer takes its place.
	o, _ := newOffer(t, stale, "r")
	o.Close()
	if _, err := os.Stat(stale); !os.IsNotExist(err) {
		t.Fatalf("the offer's socket is left after its close: %v", err)
	}
}

// TestHandoverRefusals: what is not a successor of this role is refused
// with its reason, and the offer goes on waiting: the next successor
// gets everything.
func TestHandoverRefusals(t *testing.T) {
	path := filepath.Join(t.TempDir(), "h.sock")
	s := NewStore(nil)
	defer s.Close()
	kept, _ := pair(t)
	if err := s.Keep("kt-m.1", kept); err != nil {
		t.Fatal(err)
	}
	o, asked := newOffer(t, path, "kata-trace-forwarder")
	ask := func(b []byte, fds ...int) string {
		c, err := net.DialUnix("unixpacket", nil, &net.UnixAddr{Name: path, Net: "unixpacket"})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		var oob []byte
		if len(fds) > 0 {
			oob = unix.UnixRights(fds...)
		}
		if _, _, err := c.WriteMsgUnix(b, oob, nil); err != nil {
			t.Fatal(err)
		}
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		m, _, err := read(c, 0)
		if err != nil {
			t.Fatal(err)
		}
		return m.Error
	}
	req := func(role string, v int) []byte {
		b, _ := json.Marshal(message{Handover: v, Role: role, PID: 1})
		return b
	}
	for _, tt := range []struct {
		name string
		b    []byte
		fds  []int
		want string
	}{
		{"another role", req("vsock-to-udp-server", version), nil, "not a vsock-to-udp-server"},
		{"another version", req("kata-trace-forwarder", version+1), nil, "protocol version 2"},
		{"garbage", []byte("take it all"), nil, "not a handover message"},
		{"descriptors with the request", req("kata-trace-forwarder", version), []int{0}, "descriptors where 0 were allowed"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := ask(tt.b, tt.fds...); !strings.Contains(got, tt.want) {
				t.Fatalf("refusal %q, want it to say %q", got, tt.want)
			}
		})
	}
	select {
	case <-asked:
		t.Fatal("a refused request counted as a successor's")
	default:
	}
	// A successor that goes away half-way took nothing: the next gets all.
	c, err := net.DialUnix("unixpacket", nil, &net.UnixAddr{Name: path, Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.WriteMsgUnix(req("kata-trace-forwarder", version), nil, nil); err != nil {
		t.Fatal(err)
	}
	<-asked
	c.Close()
	done := make(chan error, 1)
	go func() { done <- o.Give(context.Background(), s) }()
	files, _, err := Take(context.Background(), path, "kata-trace-forwarder")
	if err != nil || len(files) != 1 || files["kt-m.1"] == nil {
		t.Fatalf("the next successor took %v: %v", files, err)
	}
	files["kt-m.1"].Close()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// TestGiveEndsWithItsContext: nobody asks; Give returns when the stop
// comes.
func TestGiveEndsWithItsContext(t *testing.T) {
	o, _ := newOffer(t, filepath.Join(t.TempDir(), "h.sock"), "r")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := o.Give(ctx, NewStore(nil)); err == nil {
		t.Fatal("Give returned no error without a successor")
	}
}
