package endpoint

import (
	"errors"
	"strings"
	"testing"
)

var addrTests = []struct {
	in   string
	want Addr
	err  string // substring of the error; "" for success
}{
	{in: "vsock://2:6831", want: Addr{Scheme: "vsock", CID: 2, Port: 6831}},
	{in: "vsock://any:6831", want: Addr{Scheme: "vsock", AnyCID: true, Port: 6831}},
	{in: "vsock://:5140", want: Addr{Scheme: "vsock", AnyCID: true, Port: 5140}},
	{in: "vsock://4294967294:1", want: Addr{Scheme: "vsock", CID: 4294967294, Port: 1}},
	{in: "unix:///run/kata.hvsock_6831", want: Addr{Scheme: "unix", Path: "/run/kata.hvsock_6831"}},
	{in: "unix://@abstract", want: Addr{Scheme: "unix", Path: "@abstract"}},
	{in: "unixgram:///dev/log", want: Addr{Scheme: "unixgram", Path: "/dev/log"}},
	{in: "udp://127.0.0.1:6831", want: Addr{Scheme: "udp", HostPort: "127.0.0.1:6831"}},
	{in: "udp://[::1]:6831", want: Addr{Scheme: "udp", HostPort: "[::1]:6831"}},
	{in: "udp://:6831", want: Addr{Scheme: "udp", HostPort: ":6831"}},
	{in: "tcp://localhost:0", want: Addr{Scheme: "tcp", HostPort: "localhost:0"}},
	{in: "fd://3", want: Addr{Scheme: "fd", FD: 3}},
	{in: "serial:///dev/ttyS1", want: Addr{Scheme: "serial", Path: "/dev/ttyS1"}},
	{in: "stdout", want: Addr{Scheme: "stdout"}},
	{in: "", err: "missing scheme"},
	{in: "6831", err: "missing scheme"},
	{in: "http://x:1", err: `unknown scheme "http"`},
	{in: "vsock://2", err: "want vsock://CID:PORT"},
	{in: "vsock://two:6831", err: `CID "two"`},
	{in: "vsock://4294967295:1", err: "CID"},
	{in: "vsock://2:-1", err: `port "-1"`},
	{in: "vsock://2:4294967295", err: "port"},
	{in: "unix://", err: "empty socket path"},
	{in: "unix://tmp/x", err: "unix:///tmp/x (three slashes)"},
	{in: "unixgram://relative.sock", err: "must be absolute"},
	{in: "unix:///" + strings.Repeat("a", 107), err: "longer than the 107"},
	{in: "unix:///a\x00b", err: "NUL"},
	{in: "serial://dev/ttyS1", err: "absolute device path"},
	{in: "udp://127.0.0.1", err: "want udp://HOST:PORT"},
	{in: "udp://127.0.0.1:65536", err: `port "65536"`},
	{in: "tcp://a b:1", err: "host"},
	{in: "fd://-1", err: "file descriptor"},
	{in: "fd://x", err: "file descriptor"},
}

func TestParseAddr(t *testing.T) {
	for _, tt := range addrTests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseAddr(tt.in)
			if tt.err != "" {
				var ae *AddrError
				if !errors.As(err, &ae) || !strings.Contains(err.Error(), tt.err) || ae.Example == "" {
					t.Fatalf("ParseAddr(%q) error = %v, want an *AddrError with %q and an example", tt.in, err, tt.err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("ParseAddr(%q) = %+v, %v; want %+v", tt.in, got, err, tt.want)
			}
			again, err := ParseAddr(got.String())
			if err != nil || again != got {
				t.Fatalf("round trip through %q gave %+v, %v", got.String(), again, err)
			}
		})
	}
}

func TestRequire(t *testing.T) {
	a := mustParseAddr("tcp://127.0.0.1:1")
	if err := a.Require("x takes", SchemeTCP); err != nil {
		t.Fatal(err)
	}
	err := a.Require("the sink takes", SchemeUDP, SchemeUnixgram, SchemeStdout)
	if err == nil || !strings.Contains(err.Error(), "udp://, unixgram:// or stdout, not tcp://") ||
		!strings.Contains(err.Error(), "example: udp://127.0.0.1:6831") {
		t.Fatalf("Require error = %v", err)
	}
}

func FuzzParseAddr(f *testing.F) {
	for _, tt := range addrTests {
		f.Add(tt.in)
	}
	f.Fuzz(func(t *testing.T, s string) {
		a, err := ParseAddr(s)
		if err != nil {
			if !strings.Contains(err.Error(), "example:") {
				t.Fatalf("error without an example: %v", err)
			}
			return
		}
		b, err := ParseAddr(a.String())
		if err != nil || b != a {
			t.Fatalf("%q parsed to %+v, whose String %q parses to %+v, %v", s, a, a.String(), b, err)
		}
	})
}

func TestPatternChecks(t *testing.T) {
	for _, tt := range []struct{ in, err string }{
		{"unix:///run/vc/firecracker/*/root/kata.hvsock_6831", ""},
		{"unix:///run/vc/vm/*/clh.sock_6831", ""},
		{"unix:///run/vc/*/root/*.sock", "not the socket's name"},
		{"unix:///run/vc/[/root/x", "bad pattern"},
	} {
		a := mustParseAddr(tt.in)
		err := a.CheckPattern()
		if !a.IsPattern() || (tt.err == "") != (err == nil) || err != nil && !strings.Contains(err.Error(), tt.err) {
			t.Errorf("%s: pattern %v, check %v; want error %q", tt.in, a.IsPattern(), err, tt.err)
		}
	}
}

// mustParseAddr is ParseAddr for the tests' constants.
func mustParseAddr(s string) Addr {
	a, err := ParseAddr(s)
	if err != nil {
		panic(err)
	}
	return a
}

func TestVMMSocket(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"/run/vc/firecracker/ID/root/kata.hvsock_10240", "/run/vc/firecracker/ID/root/kata.hvsock"},
		{"/run/kata/*/ch-vm.sock_6831", "/run/kata/*/ch-vm.sock"},
		{"/run/vc/vm/*/clh.sock", ""},
		{"/run/x/relay_sock", ""},
		{"/run/x/relay_", ""},
		{"/run/x/_10240", ""},
		{"/run/x/relay_99999999999", ""}, // no vsock port
	} {
		if got := VMMSocket(tt.in); got != tt.want {
			t.Errorf("VMMSocket(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestCheckNotVMMSocket(t *testing.T) {
	for _, tt := range []struct{ in, err string }{
		{"unix:///run/vc/vm/*/clh.sock", `come to unix:///run/vc/vm/*/clh.sock_6831 (example: `},
		{"unix:///run/vc/firecracker/ID/root/kata.hvsock", "kata.hvsock is the VMM's own hybrid-vsock socket (Firecracker, Dragonball)"},
		{"unix:///run/kata/*/ch-vm.sock", "port 6831 come to unix:///run/kata/*/ch-vm.sock_6831"},
		{"unix:///run/kata/ID/vsock.sock", "vsock.sock is the VMM's own hybrid-vsock socket (OpenVMM, runtime-rs)"},
		{"unix:///run/vc/vm/*/clh.sock_6831", ""},
		{"unix:///run/x/other.sock", ""},
		{"unix:///run/myapp/vsock.sock", ""}, // a common name outside Kata's tree
		{"vsock://any:6831", ""},
	} {
		t.Run(tt.in, func(t *testing.T) {
			err := mustParseAddr(tt.in).CheckNotVMMSocket(6831)
			if (tt.err == "") != (err == nil) || err != nil && !strings.Contains(err.Error(), tt.err) {
				t.Errorf("%v; want error %q", err, tt.err)
			}
		})
	}
}
