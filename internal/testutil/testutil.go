package testutil

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/katatrace/katatrace/internal/freeport"
)

// SockDir returns a short temporary directory, removed after the test: unix
// socket paths must fit in 107 bytes, which t.TempDir's often do not.
func SockDir(t testing.TB) string {
	t.Helper()
	d, err := os.MkdirTemp("", "kt")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

// VMMSocket makes a VM's directory and its VMM's hybrid-vsock socket at
// path (.../root/kata.hvsock), as Kata and the VMM do: a socket file,
// bound by a listener closed at once (a watch asks only that it is there).
func VMMSocket(t testing.TB, path string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	_ = ln.Close()
}

// UDPSink is a UDP socket on 127.0.0.1 that records every datagram it gets.
type UDPSink struct {
	conn *net.UDPConn
	mu   sync.Mutex
	got  [][]byte
	more chan struct{}
	done chan struct{}
}

// NewUDPSink listens on a free loopback port until the test ends. Its
// receive buffer is forced large (as root), so that bursts are not lost in
// the kernel: loss must come only from the code under test.
func NewUDPSink(t testing.TB) *UDPSink {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	ForceReadBuffer(c, 64<<20)
	s := &UDPSink{conn: c, more: make(chan struct{}, 1), done: make(chan struct{})}
	go s.read()
	t.Cleanup(func() { c.Close(); <-s.done })
	return s
}

func (s *UDPSink) read() {
	defer close(s.done)
	buf := make([]byte, 65536)
	for {
		n, err := s.conn.Read(buf)
		if err != nil {
			return
		}
		s.mu.Lock()
		s.got = append(s.got, append([]byte(nil), buf[:n]...))
		s.mu.Unlock()
		select {
		case s.more <- struct{}{}:
		default:
		}
	}
}

// Addr is the sink's address as a katatrace flag takes it.
func (s *UDPSink) Addr() string { return "udp://" + s.conn.LocalAddr().String() }

// Got returns a copy of what arrived so far.
func (s *UDPSink) Got() [][]byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([][]byte(nil), s.got...)
}

// WaitFor waits until at least n datagrams arrived, or timeout; it returns
// what arrived either way.
func (s *UDPSink) WaitFor(n int, timeout time.Duration) [][]byte {
	deadline := time.After(timeout)
	for {
		if got := s.Got(); len(got) >= n {
			return got
		}
		select {
		case <-s.more:
		case <-deadline:
			return s.Got()
		}
	}
}

// Quiet waits until nothing has arrived for d, and returns all that did.
func (s *UDPSink) Quiet(d time.Duration) [][]byte {
	for {
		select {
		case <-s.more:
		case <-time.After(d):
			return s.Got()
		}
	}
}

// Eventually polls cond every few milliseconds until it holds or timeout.
func Eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// FreePort is a loopback port of network ("udp" or "tcp") for a server that
// must be told its port: see freeport.
func FreePort(t testing.TB, network string) int {
	t.Helper()
	p, err := freeport.Pick(network)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// WaitUDPBound waits until another process has bound UDP 127.0.0.1:port
// (socat binds when it gets to it): a probe, not a sleep.
func WaitUDPBound(t testing.TB, port int) {
	t.Helper()
	Eventually(t, 10*time.Second, fmt.Sprintf("UDP port %d bound", port), func() bool {
		c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port})
		if err != nil {
			return true
		}
		c.Close()
		return false
	})
}

// Must returns v, or panics with err: for values the test itself wrote
// (testutil.Must(endpoint.ParseAddr("udp://127.0.0.1:0"))).
func Must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// SteadyClient sends 1,000 datagrams of 500 bytes a second, in tens, to
// addr on network until stop (or the test's end).
func SteadyClient(t testing.TB, network, addr string) (stop func()) {
	t.Helper()
	c, err := net.Dial(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	done, ended := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(ended)
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
			}
			for range 10 {
				_, _ = c.Write(make([]byte, 500))
			}
		}
	}()
	stop = sync.OnceFunc(func() { close(done); <-ended; c.Close() })
	t.Cleanup(stop)
	return stop
}

// Distinct is how many keys seen counts (things that arrived, by id), and
// how many of them arrived more than once.
func Distinct[K comparable](seen map[K]int) (distinct, twice int) {
	for _, n := range seen {
		if n > 1 {
			twice++
		}
	}
	return len(seen), twice
}
