package handover

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
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
	var once sync.Once
	o, err := NewOffer(path, role, quiet(), func() error { once.Do(func() { close(asked) }); return nil })
	if err == nil {
		err = o.Publish()
	}
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
	s := NewStore()
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
	gave := make(chan error, 1)
	go func() {
		<-asked
		gave <- o.Give(context.Background(), s, nil, time.Minute)
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	taken, err := Take(ctx, path, "kata-trace-forwarder")
	if err != nil {
		t.Fatal(err)
	}
	files := taken.Files
	if taken.PID != os.Getpid() || len(files) != n {
		t.Fatalf("took %d descriptors from pid %d, want %d from %d", len(files), taken.PID, n, os.Getpid())
	}
	select {
	case err := <-gave:
		t.Fatalf("the predecessor let go before the successor committed: %v", err)
	case <-time.After(100 * time.Millisecond):
	}
	if err := taken.Commit(); err != nil {
		t.Fatal(err)
	}
	if err := <-gave; err != nil {
		t.Fatal(err)
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
	_, err = Take(context.Background(), path, "kata-trace-forwarder")
	if err == nil || !strings.Contains(err.Error(), "handed over already") {
		t.Fatalf("a second successor: %v", err)
	}
}

// TestTakeNobody: no socket, or a stale one, is no predecessor.
func TestTakeNobody(t *testing.T) {
	dir := t.TempDir()
	taken, err := Take(context.Background(), filepath.Join(dir, "missing.sock"), "r")
	if taken != nil || err != nil {
		t.Fatalf("no socket: %v, %v", taken, err)
	}
	stale := filepath.Join(dir, "stale.sock")
	ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: stale, Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close()
	taken, err = Take(context.Background(), stale, "r")
	if taken != nil || err != nil {
		t.Fatalf("a stale socket: %v, %v", taken, err)
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
	s := NewStore()
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
	// A successor that goes away half-way, and one that takes everything
	// and goes away before it commits, took nothing: the next gets all.
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
	go func() { done <- o.Give(context.Background(), s, nil, time.Minute) }()
	for _, commit := range []bool{false, true} {
		taken, err := Take(context.Background(), path, "kata-trace-forwarder")
		if err != nil || len(taken.Files) != 1 || taken.Files["kt-m.1"] == nil {
			t.Fatalf("a successor took %v: %v", taken, err)
		}
		taken.Files["kt-m.1"].Close()
		if !commit {
			taken.Abandon()
			continue
		}
		if err := taken.Commit(); err != nil {
			t.Fatal(err)
		}
	}
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
	if err := o.Give(ctx, NewStore(), nil, time.Minute); err == nil {
		t.Fatal("Give returned no error without a successor")
	}
}

// openFDs counts this process's open descriptors.
func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// fakePredecessor answers one request at path with what send writes,
// then closes; wait waits for it to be done.
func fakePredecessor(t *testing.T, path string, send func(c *net.UnixConn)) (wait func()) {
	t.Helper()
	ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: path, Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer ln.Close()
		c, err := ln.AcceptUnix()
		if err != nil {
			return
		}
		defer c.Close()
		if _, _, err := read(c, 0); err != nil {
			return
		}
		send(c)
	}()
	t.Cleanup(func() { ln.Close(); <-done })
	return func() { <-done }
}

// TestTakeRefusesWhatIsNoHandover: a predecessor that sends what the
// protocol does not allow is refused with what was wrong, and every
// descriptor it sent is closed.
func TestTakeRefusesWhatIsNoHandover(t *testing.T) {
	var socks []*os.File // made before the descriptors are counted
	for range perMessage + 1 {
		kept, _ := pair(t)
		f, err := kept.File()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		socks = append(socks, f)
	}
	sock := func(*testing.T) *os.File {
		f := socks[0]
		socks = append(socks[1:], f)
		return f
	}
	n := func(v int) *int { return &v }
	for _, tt := range []struct {
		name string
		send func(t *testing.T, c *net.UnixConn)
		want string
	}{
		{"names without descriptors", func(t *testing.T, c *net.UnixConn) {
			_ = write(c, message{Names: []string{"kt-m.1", "kt-m.2"}}, []*os.File{sock(t)})
		}, "named 2 descriptors and carried 1"},
		{"a name twice", func(t *testing.T, c *net.UnixConn) {
			_ = write(c, message{Names: []string{"kt-m.1"}}, []*os.File{sock(t)})
			_ = write(c, message{Names: []string{"kt-m.1"}}, []*os.File{sock(t)})
		}, `"kt-m.1" sent twice`},
		{"a name not printable", func(t *testing.T, c *net.UnixConn) {
			_ = write(c, message{Names: []string{"kt-m.1", "kt\tm"}}, []*os.File{sock(t), sock(t)})
		}, "not printable ASCII"},
		{"a count that is not what came", func(t *testing.T, c *net.UnixConn) {
			_ = write(c, message{Names: []string{"kt-m.1"}}, []*os.File{sock(t)})
			_ = write(c, message{Done: n(2)}, nil)
		}, "sent 2 descriptors, and 1 came"},
		{"descriptors with the end", func(t *testing.T, c *net.UnixConn) {
			_ = write(c, message{Done: n(1)}, []*os.File{sock(t)})
		}, "sent 1 descriptors, and 0 came"},
		{"an answer where descriptors go", func(t *testing.T, c *net.UnixConn) {
			_ = write(c, message{Taken: n(0)}, nil)
		}, "neither descriptors nor their end"},
		{"more descriptors than a message takes", func(t *testing.T, c *net.UnixConn) {
			files := make([]*os.File, perMessage+1)
			names := make([]string, len(files))
			for i := range files {
				files[i], names[i] = sock(t), "kt-m."+strconv.Itoa(i)
			}
			_ = write(c, message{Names: names}, files)
		}, "more than 128 descriptors"},
		{"a refusal", func(t *testing.T, c *net.UnixConn) {
			_ = write(c, message{Error: "no"}, nil)
		}, "refused: no"},
		{"gone", func(*testing.T, *net.UnixConn) {}, "closed the handover"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "h.sock")
			before := openFDs(t)
			wait := fakePredecessor(t, path, func(c *net.UnixConn) { tt.send(t, c) })
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			taken, err := Take(ctx, path, "r")
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Take = %v, %v; want an error saying %q", taken, err, tt.want)
			}
			wait()
			if after := openFDs(t); after > before {
				t.Errorf("%d descriptors left open by a refused handover", after-before)
			}
		})
	}
}

// TestHandoverOfLongNames: names of 255 bytes that JSON escapes (quotes,
// backslashes, HTML's characters) go in messages the successor reads
// whole.
func TestHandoverOfLongNames(t *testing.T) {
	path := filepath.Join(t.TempDir(), "h.sock")
	s := NewStore()
	defer s.Close()
	kept, _ := pair(t)
	want := map[string]bool{}
	for i := range 300 {
		name := fmt.Sprintf("kt-m.%03d.", i) + strings.Repeat(`"\<>&`, 50)
		name = name[:255]
		if err := s.Keep(name, kept); err != nil {
			t.Fatal(err)
		}
		want[name] = true
	}
	o, asked := newOffer(t, path, "r")
	go func() {
		<-asked
		_ = o.Give(context.Background(), s, nil, time.Minute)
	}()
	taken, err := Take(context.Background(), path, "r")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Abandon()
	for name, f := range taken.Files {
		f.Close()
		delete(want, name)
	}
	if len(want) != 0 || len(taken.Files) != 300 {
		t.Fatalf("took %d of 300 names, %d missing", len(taken.Files), len(want))
	}
}

// TestHandoverOnlyToTheSameUser: a process of another user is refused at
// both ends: the offer does not answer its request, and its Take does
// not trust an offer of another user. The other user is this test's
// binary run as nobody.
func TestHandoverOnlyToTheSameUser(t *testing.T) {
	if path := os.Getenv("KATATRACE_HANDOVER_ASK"); path != "" {
		// The child, as another user.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err := Take(ctx, path, "r")
		fmt.Println("take:", err)
		c, err := net.DialUnix("unixpacket", nil, &net.UnixAddr{Name: path, Net: "unixpacket"})
		if err != nil {
			fmt.Println("dial:", err)
			return
		}
		b, _ := json.Marshal(message{Handover: version, Role: "r", PID: 1})
		_, _, _ = c.WriteMsgUnix(b, nil, nil)
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		m, _, err := read(c, 0)
		fmt.Println("refusal:", m.Error, err)
		return
	}
	if os.Geteuid() != 0 {
		t.Skip("running a process as another user needs root")
	}
	dir, err := os.MkdirTemp("", "kt-handover")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	path := filepath.Join(dir, "h.sock")
	_, asked := newOffer(t, path, "r")
	// Let the other user reach the socket: the uid check is what refuses.
	for _, p := range []string{dir, path} {
		if err := os.Chmod(p, 0o777); err != nil {
			t.Fatal(err)
		}
	}
	// The test binary where the other user may run it.
	bin := filepath.Join(dir, "handover.test")
	b, err := os.ReadFile(os.Args[0])
	if err == nil {
		err = os.WriteFile(bin, b, 0o755)
	}
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-test.run=^TestHandoverOnlyToTheSameUser$")
	cmd.Env = append(os.Environ(), "KATATRACE_HANDOVER_ASK="+path)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("the other user's process: %v\n%s", err, out)
	}
	for _, want := range []string{
		"take: the process at the other end",
		"runs as uid 0, and this one as 65534",
		"refusal: the request: the process at the other end",
		"runs as uid 65534, and this one as 0",
	} {
		if !strings.Contains(string(out), want) {
			t.Errorf("the other user's process did not see %q:\n%s", want, out)
		}
	}
	select {
	case <-asked:
		t.Error("another user's request counted as a successor's")
	default:
	}
}
