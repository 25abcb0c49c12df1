package fdstore

import (
	"bytes"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/katatrace/katatrace/internal/testutil"
	"golang.org/x/sys/unix"
)

// notifySocket is a real unixgram socket as systemd's, NOTIFY_SOCKET
// naming it.
func notifySocket(t *testing.T) *net.UnixConn {
	t.Helper()
	path := filepath.Join(testutil.SockDir(t), "notify")
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	t.Setenv("NOTIFY_SOCKET", path)
	return c
}

// receive reads one notification and the descriptors it carries.
func receive(t *testing.T, c *net.UnixConn) (string, []*os.File) {
	t.Helper()
	buf, oob := make([]byte, 1024), make([]byte, unix.CmsgSpace(4*4))
	n, oobn, _, _, err := c.ReadMsgUnix(buf, oob)
	if err != nil {
		t.Fatal(err)
	}
	var files []*os.File
	cmsgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range cmsgs {
		fds, err := unix.ParseUnixRights(&m)
		if err != nil {
			t.Fatal(err)
		}
		for _, fd := range fds {
			files = append(files, os.NewFile(uintptr(fd), "received"))
		}
	}
	return string(buf[:n]), files
}

func socketPair(t *testing.T) (net.Conn, net.Conn) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	var cs [2]net.Conn
	for i, fd := range fds {
		f := os.NewFile(uintptr(fd), "pair")
		c, err := net.FileConn(f)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		cs[i] = c
	}
	return cs[0], cs[1]
}

// TestKeepAndForget: a connection goes to the service manager with
// FDSTORE=1, FDPOLL=0 and its name, as the same socket; it leaves with
// FDSTOREREMOVE=1; the store counts what it holds and refuses beyond its
// size without sending.
func TestKeepAndForget(t *testing.T) {
	n := notifySocket(t)
	s, err := Open(3, 0) // two connections, and the state's place
	if err != nil || s == nil {
		t.Fatalf("Open = %v, %v", s, err)
	}
	ours, peer := socketPair(t)
	if err := s.Keep("kt-m.1.unix%3A///run/x_10240", ours.(syscall.Conn)); err != nil {
		t.Fatal(err)
	}
	state, files := receive(t, n)
	if state != "FDSTORE=1\nFDPOLL=0\nFDNAME=kt-m.1.unix%3A///run/x_10240" || len(files) != 1 {
		t.Fatalf("got %q with %d descriptors", state, len(files))
	}
	// The stored descriptor is the connection: the peer's bytes arrive there.
	if _, err := peer.Write([]byte("span")); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 4)
	if _, err := files[0].Read(got); err != nil || string(got) != "span" {
		t.Fatalf("read %q, %v from the stored descriptor", got, err)
	}
	files[0].Close()

	state2, _ := socketPair(t)
	if err := s.Keep("kt-m.2.x", state2.(syscall.Conn)); err != nil || s.Len() != 2 {
		t.Fatalf("second Keep: %v, %d held", err, s.Len())
	}
	receive(t, n)
	if err := s.Keep("kt-m.3.x", state2.(syscall.Conn)); !errors.Is(err, ErrFull) {
		t.Fatalf("Keep beyond the size = %v, want ErrFull", err)
	}
	if err := s.Keep(StateName, state2.(syscall.Conn)); err != nil || s.Len() != 3 {
		t.Fatalf("the state's place: %v, %d held", err, s.Len())
	}
	receive(t, n)
	if err := s.Forget(StateName); err != nil {
		t.Fatal(err)
	}
	receive(t, n)
	if err := s.Forget("kt-m.1.unix%3A///run/x_10240"); err != nil || s.Len() != 1 {
		t.Fatalf("Forget: %v, %d held", err, s.Len())
	}
	if state, files := receive(t, n); state != "FDSTOREREMOVE=1\nFDNAME=kt-m.1.unix%3A///run/x_10240" || len(files) != 0 {
		t.Fatalf("got %q with %d descriptors", state, len(files))
	}
	for _, bad := range []string{"", "a:b", "caf\u00e9", strings.Repeat("x", 256), "tab\there"} {
		if err := s.Keep(bad, ours.(syscall.Conn)); err == nil || !strings.Contains(err.Error(), "FDNAME") {
			t.Errorf("Keep(%q) = %v, want an error naming the FDNAME", bad, err)
		}
	}
}

// TestOpen: no manager, or one over vsock, is no store; $FDSTORE (systemd
// 254 and later) says the size; 0 keeps none.
func TestOpen(t *testing.T) {
	for _, tc := range []struct {
		name, notify, fdstore string
		max                   int
		want                  int // the store's size; 0: no store
		err                   string
	}{
		{"no manager", "", "", 10, 0, ""},
		{"vsock", "vsock:2:1", "", 10, 0, ""},
		{"unix", "/run/notify", "", 10, 10, ""},
		{"$FDSTORE wins", "/run/notify", "64", 10, 64, ""},
		{"$FDSTORE 0", "/run/notify", "0", 10, 0, ""},
		{"keep none", "/run/notify", "", 0, 0, ""},
		{"no room but the state's", "/run/notify", "1", 10, 0, ""},
		{"bad $FDSTORE", "/run/notify", "lots", 10, 0, "FDSTORE="},
		{"bad NOTIFY_SOCKET", "relative", "", 10, 0, "NOTIFY_SOCKET"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("NOTIFY_SOCKET", tc.notify)
			t.Setenv("FDSTORE", tc.fdstore)
			s, err := Open(tc.max, 0)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("Open = %v, want an error naming %s", err, tc.err)
				}
				return
			}
			if err != nil || (s == nil) != (tc.want == 0) || s != nil && s.Max() != tc.want {
				t.Fatalf("Open = %+v, %v; want size %d", s, err, tc.want)
			}
		})
	}
}

func TestState(t *testing.T) {
	want := bytes.Repeat([]byte("state "), 1000)
	f, err := WriteState(StateName, want)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if got, err := ReadState(f, int64(len(want))); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("ReadState: %d bytes, %v", len(got), err)
	}
	if _, err := ReadState(f, 10); err == nil {
		t.Fatal("a state beyond the limit was read")
	}
}

// TestForgetWithoutStore: a process that keeps no store still takes out
// of the unit's store what a predecessor kept.
func TestForgetWithoutStore(t *testing.T) {
	n := notifySocket(t)
	var s *Store
	if err := s.Forget(StateName); err != nil {
		t.Fatal(err)
	}
	if state, _ := receive(t, n); state != "FDSTOREREMOVE=1\nFDNAME="+StateName {
		t.Fatalf("got %q", state)
	}
}
