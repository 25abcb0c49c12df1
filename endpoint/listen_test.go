package endpoint

import (
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
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

// TestUnixSocketAppearsListening: a peer that connects the moment a
// socket's path exists is never refused (a VMM connecting as the relay
// starts), and no temporary name is left behind, listening or closed. A
// dialer spins on connect(2) while the listener is made, again and again.
func TestUnixSocketAppearsListening(t *testing.T) {
	dir := testutil.SockDir(t)
	path := filepath.Join(dir, "kata.hvsock_6831")
	a := mustParseAddr("unix://" + path)
	for i := range 300 {
		fd, err := syscall.Socket(syscall.AF_UNIX, syscall.SOCK_STREAM, 0)
		if err != nil {
			t.Fatal(err)
		}
		dialed := make(chan error, 1)
		go func() {
			defer syscall.Close(fd)
			for {
				// One socket for every try: a connect that found no
				// file leaves it unconnected.
				switch err := syscall.Connect(fd, &syscall.SockaddrUnix{Name: path}); {
				case err == nil:
					dialed <- nil
					return
				case errors.Is(err, syscall.ENOENT):
				default:
					dialed <- err
					return
				}
			}
		}()
		ln, err := Listen(a)
		if err != nil {
			t.Fatal(err)
		}
		if err := <-dialed; err != nil {
			t.Fatalf("try %d: a peer connecting as the socket appeared: %v", i, err)
		}
		if got := ls(t, dir); !slices.Equal(got, []string{"kata.hvsock_6831"}) {
			t.Fatalf("try %d: listening, the directory holds %q", i, got)
		}
		if ln.Addr().String() != path {
			t.Fatalf("listener's address %q, want %q", ln.Addr(), path)
		}
		if err := ln.Close(); err != nil {
			t.Fatal(err)
		}
		if got := ls(t, dir); len(got) != 0 {
			t.Fatalf("try %d: closed, the directory holds %q", i, got)
		}
	}
}

// TestListenUnixPaths: what is at a socket's path already, for a stream
// listener and a datagram socket, and a path as long as a unix socket
// allows; no temporary name is left in any case.
func TestListenUnixPaths(t *testing.T) {
	type open func(t *testing.T, path string) (addr string, closer func(), err error)
	stream := func(t *testing.T, path string) (string, func(), error) {
		ln, err := Listen(mustParseAddr("unix://" + path))
		if err != nil {
			return "", nil, err
		}
		return ln.Addr().String(), func() { ln.Close() }, nil
	}
	datagram := func(t *testing.T, path string) (string, func(), error) {
		pc, err := ListenPacket(mustParseAddr("unixgram://" + path))
		if err != nil {
			return "", nil, err
		}
		return pc.LocalAddr().String(), func() { pc.Close() }, nil
	}
	// before puts something at the path; want is the error's text, or "".
	for _, tt := range []struct {
		name   string
		before func(t *testing.T, network, path string)
		want   string
	}{
		{"nothing", func(*testing.T, string, string) {}, ""},
		{"a stale socket", func(t *testing.T, network, path string) {
			fd, err := syscall.Socket(syscall.AF_UNIX, map[string]int{"unix": syscall.SOCK_STREAM, "unixgram": syscall.SOCK_DGRAM}[network], 0)
			if err != nil {
				t.Fatal(err)
			}
			defer syscall.Close(fd) // closed: nobody answers
			if err := syscall.Bind(fd, &syscall.SockaddrUnix{Name: path}); err != nil {
				t.Fatal(err)
			}
		}, ""},
		{"a live socket", func(t *testing.T, network, path string) {
			var c io.Closer
			var err error
			if network == "unix" {
				c, err = net.Listen(network, path)
			} else {
				c, err = net.ListenPacket(network, path)
			}
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { c.Close() })
		}, "address already in use: another process is listening there"},
		{"a file", func(t *testing.T, _, path string) {
			if err := os.WriteFile(path, []byte("keep"), 0o600); err != nil {
				t.Fatal(err)
			}
		}, "bind: address already in use"},
	} {
		for network, open := range map[string]open{"unix": stream, "unixgram": datagram} {
			t.Run(tt.name+"/"+network, func(t *testing.T) {
				dir := testutil.SockDir(t)
				path := filepath.Join(dir, "s")
				tt.before(t, network, path)
				addr, closer, err := open(t, path)
				switch {
				case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), path)):
					t.Fatalf("got %v, want an error naming %s: %q", err, path, tt.want)
				case tt.want == "" && err != nil:
					t.Fatal(err)
				case err == nil:
					if addr != path {
						t.Errorf("address %q, want %q", addr, path)
					}
					defer closer()
				}
				if got := ls(t, dir); !slices.Equal(got, []string{"s"}) {
					t.Fatalf("the directory holds %q", got)
				}
				if tt.name == "a file" {
					if b, _ := os.ReadFile(path); string(b) != "keep" {
						t.Fatalf("the file was replaced: %q", b)
					}
				}
			})
		}
	}

	t.Run("the longest path", func(t *testing.T) {
		dir := testutil.SockDir(t)
		path := filepath.Join(dir, strings.Repeat("d", maxUnixPath-len(dir)-3), "s")
		if err := os.Mkdir(filepath.Dir(path), 0o700); err != nil {
			t.Fatal(err)
		}
		if len(path) != maxUnixPath {
			t.Fatalf("path of %d bytes", len(path))
		}
		ln, err := Listen(mustParseAddr("unix://" + path))
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		if got := ls(t, filepath.Dir(path)); !slices.Equal(got, []string{"s"}) {
			t.Fatalf("the directory holds %q", got)
		}
	})
}

func ls(t *testing.T, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range es {
		names = append(names, e.Name())
	}
	return names
}
