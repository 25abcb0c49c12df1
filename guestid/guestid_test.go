package guestid

import (
	"net"
	"strings"
	"testing"

	"github.com/mdlayher/vsock"
)

type fakeConn struct {
	net.Conn
	remote net.Addr
}

func (c fakeConn) RemoteAddr() net.Addr { return c.remote }

func TestOf(t *testing.T) {
	for _, tc := range []struct {
		name        string
		remote      net.Addr
		listener    string
		guest, conn string
	}{
		{"vsock", &vsock.Addr{ContextID: 3, Port: 1034}, "vsock://any:10240", "vsock:vm(3)", "vsock:vm(3):1034"},
		{"unix, unnamed", &net.UnixAddr{Net: "unix"}, "unix:///run/vc/vm/sid/clh.sock_10240",
			"unix:///run/vc/vm/sid/clh.sock_10240", "unix:///run/vc/vm/sid/clh.sock_10240#7"},
		{"tcp, remote", &net.TCPAddr{IP: net.IPv4(10, 0, 0, 5), Port: 40000}, "tcp://0.0.0.0:10240", "tcp:10.0.0.5", "tcp:10.0.0.5:40000"},
		{"tcp, loopback", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40000}, "tcp://127.0.0.1:10240",
			"tcp:127.0.0.1:40000", "tcp:127.0.0.1:40000"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id := Of(fakeConn{remote: tc.remote}, tc.listener, 7)
			if id.Guest != tc.guest || id.Conn != tc.conn || id.Listener != tc.listener || id.Seq != 7 {
				t.Fatalf("Of = %+v, want guest %q conn %q", id, tc.guest, tc.conn)
			}
		})
	}
}

func TestStoreName(t *testing.T) {
	for _, listener := range []string{
		"vsock://any:10240",
		"unix:///run/vc/vm/3f2a/clh.sock_10240",
		"unix:///tmp/a%b:c d/é_10240",
		"tcp://[::1]:10240",
		"",
	} {
		t.Run(listener, func(t *testing.T) {
			id := ID{Listener: listener, Seq: 42}
			name := id.StoreName("kt-conn.")
			if strings.ContainsAny(name, ":") || len(name) > 255 {
				t.Fatalf("%q is no FDNAME", name)
			}
			for _, c := range []byte(name) {
				if c < ' ' || c > '~' {
					t.Fatalf("%q holds byte %#x", name, c)
				}
			}
			seq, got, err := ParseStoreName("kt-conn.", name)
			if err != nil || seq != 42 || got != listener {
				t.Fatalf("ParseStoreName(%q) = %d, %q, %v", name, seq, got, err)
			}
		})
	}
}

func TestParseStoreNameErrors(t *testing.T) {
	for _, name := range []string{"other.1.x", "kt-conn.", "kt-conn.x.y", "kt-conn.1.%4", "kt-conn.1.%zz", "kt-conn.1"} {
		if _, _, err := ParseStoreName("kt-conn.", name); err == nil || !strings.Contains(err.Error(), "stored connection") {
			t.Errorf("ParseStoreName(%q) = %v, want an error naming it", name, err)
		}
	}
}

func FuzzParseStoreName(f *testing.F) {
	f.Add("kt-conn.42.unix%3A///run/vc/vm/x/clh.sock_10240")
	f.Add("kt-conn.1.%4")
	f.Add("kt-conn.1")
	f.Fuzz(func(t *testing.T, name string) {
		seq, listener, err := ParseStoreName("kt-conn.", name)
		if err != nil {
			return
		}
		again := ID{Listener: listener, Seq: seq}.StoreName("kt-conn.")
		if s2, l2, err := ParseStoreName("kt-conn.", again); err != nil || s2 != seq || l2 != listener {
			t.Fatalf("%q → %q does not read back: %d %q %v", name, again, s2, l2, err)
		}
	})
}
