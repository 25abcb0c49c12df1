package roles_test

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/katatrace/katatrace/internal/testutil"
	"github.com/katatrace/katatrace/roles"
)

// TestMain lets the test binary be katatrace: called through a symlink named
// after a role (or katatrace, or with KATATRACE_TEST_AS_MAIN=1), it runs
// main's logic instead of the tests, as moby/sys/reexec tests do.
func TestMain(m *testing.M) {
	name := filepath.Base(os.Args[0])
	if helper, ok := testHelpers[name]; ok {
		os.Exit(helper(os.Args[1:]))
	}
	if _, ok := roles.Lookup(name); ok || name == roles.BinaryName || os.Getenv("KATATRACE_TEST_AS_MAIN") == "1" {
		os.Exit(roles.Main(os.Args, roles.Options{Version: "test"}))
	}
	os.Exit(m.Run())
}

var (
	binOnce sync.Once
	binDir  string
)

// bin returns the path of the test binary under a role's name.
func bin(t *testing.T, name string) string {
	t.Helper()
	binOnce.Do(func() {
		self, err := os.Executable()
		if err != nil {
			panic(err)
		}
		binDir, err = os.MkdirTemp("", "ktbin")
		if err != nil {
			panic(err)
		}
		names := []string{roles.BinaryName, "bogus-name"}
		for n := range testHelpers {
			names = append(names, n)
		}
		for _, r := range roles.All() {
			names = append(names, r.Name)
		}
		for _, n := range names {
			if err := os.Symlink(self, filepath.Join(binDir, n)); err != nil {
				panic(err)
			}
		}
	})
	return filepath.Join(binDir, name)
}

// start runs the test binary as name.
func start(t *testing.T, env []string, name string, args ...string) *testutil.Proc {
	t.Helper()
	return testutil.Start(t, append([]string{"KATATRACE_TEST_AS_MAIN=1"}, env...), bin(t, name), args...)
}

// run runs a katatrace command to completion.
func run(t *testing.T, env []string, name string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	p := start(t, env, name, args...)
	code = p.Wait(10 * time.Second)
	return code, p.Stdout.String(), p.Stderr.String()
}

func TestEveryRoleByNameAndAsSubcommand(t *testing.T) {
	t.Parallel()
	for _, r := range roles.All() {
		t.Run(r.Name, func(t *testing.T) {
			t.Parallel()
			code, out, _ := run(t, nil, r.Name, "--help")
			if code != 0 || !strings.Contains(out, "Usage: "+r.Name) || !strings.Contains(out, "--log-format") {
				t.Fatalf("%s --help: exit %d\n%s", r.Name, code, out)
			}
			code, out2, _ := run(t, nil, roles.BinaryName, r.Name, "--help")
			if code != 0 || !strings.Contains(out2, "Usage: katatrace "+r.Name) {
				t.Fatalf("katatrace %s --help: exit %d\n%s", r.Name, code, out2)
			}
			// The same flags either way, each with its environment twin.
			for _, line := range strings.Split(out, "\n") {
				if f := strings.Fields(line); len(f) > 0 && strings.HasPrefix(f[0], "--") && !strings.HasPrefix(f[0], "--help") && !strings.HasPrefix(f[0], "--version") {
					flag, _, _ := strings.Cut(f[0], "=")
					if !strings.Contains(out2, flag) {
						t.Errorf("%s missing from the subcommand's help", flag)
					}
					env := "$KATATRACE_" + strings.ToUpper(strings.ReplaceAll(strings.TrimPrefix(flag, "--"), "-", "_"))
					if !strings.Contains(out, env) {
						t.Errorf("%s has no environment twin %s", flag, env)
					}
				}
			}
			code, out, _ = run(t, nil, r.Name, "--version")
			if code != 0 || out != r.Name+" test\n" {
				t.Fatalf("--version: exit %d, %q", code, out)
			}
		})
	}
}

func TestVersionAndUnknownName(t *testing.T) {
	t.Parallel()
	if code, out, _ := run(t, nil, roles.BinaryName, "version"); code != 0 || out != "katatrace test\n" {
		t.Fatalf("katatrace version: %d %q", code, out)
	}
	code, _, errOut := run(t, nil, "bogus-name")
	if code != 2 || !strings.Contains(errOut, `unknown role "bogus-name"`) {
		t.Fatalf("unknown name: exit %d\n%s", code, errOut)
	}
	for _, r := range roles.All() {
		if !strings.Contains(errOut, r.Name) {
			t.Errorf("role list lacks %s", r.Name)
		}
	}
}

func TestBadInputIsAUsageError(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		env  []string
		args []string
		want []string
	}{
		{"bad address", nil, []string{"vsock-to-udp-server", "--from", "nope"}, []string{"--from", `"nope"`, "example:"}},
		{"bad address from env", []string{"KATATRACE_TO=tcp://127.0.0.1:1"}, []string{"vsock-to-udp-server"}, []string{"--to", "udp://", "KATATRACE_TO"}},
		{"wrong scheme for the role", nil, []string{"jaeger-client-socat-redirector", "--from", "vsock://2:1"}, []string{"--from", "udp://", "example: udp://127.0.0.1:6831"}},
		{"any CID to dial", nil, []string{"kata-journald-host-redirect", "--to", "vsock://any:5140"}, []string{"--to", "not \"any\""}},
		{"bad size", nil, []string{"jaeger-client-socat-redirector", "--queue-bytes", "lots"}, []string{"--queue-bytes", "4MiB"}},
		{"bad enum", nil, []string{"jaeger-client-socat-redirector", "--framing", "json"}, []string{"--framing", `"framed","v1","raw"`, `"json"`}},
		{"bad log level", nil, []string{"vsock-to-text-server", "--log-level", "loud"}, []string{"--log-level"}},
		{"unknown flag", nil, []string{"vsock-to-text-server", "--frmo", "x"}, []string{"--frmo"}},
		{"port 0", nil, []string{"vsock-to-udp-server", "--to", "udp://:0"}, []string{"--to", "port 0", "give the port"}},
		{"vsock port 0", nil, []string{"jaeger-client-socat-redirector", "--to", "vsock://2:0"}, []string{"--to", "port 0"}},
		{"two-slash unix path", nil, []string{"vsock-to-udp-server", "--from", "unix://tmp/x"}, []string{"--from", "unix:///tmp/x (three slashes)"}},
		{"unknown flag before the agent", nil, []string{"kata-agent-tracer", "--bogus", "--", "/bin/true"}, []string{"unknown flag --bogus"}},
		{"metrics over udp", nil, []string{"vsock-to-udp-server", "--metrics-listen", "udp://127.0.0.1:9464"}, []string{"--metrics-listen", "tcp://"}},
		{"metrics from env", []string{"KATATRACE_METRICS_LISTEN=serial:///dev/ttyS0"}, []string{"jaeger-client-socat-redirector"}, []string{"--metrics-listen", "KATATRACE_METRICS_LISTEN"}},
		{"negative rate", nil, []string{"vsock-to-text-server", "--guest-rate", "-1MiB/s"}, []string{"--guest-rate"}},
		{"otlp without a port", nil, []string{"vsock-to-udp-server", "--to", "otlp://collector"}, []string{"--to", "give the host and the port", "otlp://127.0.0.1:4317"}},
		{"otlp header without a value", nil, []string{"vsock-to-udp-server", "--to", "otlp://127.0.0.1:4317", "--otlp-header", "api-key"}, []string{"--otlp-header", "KEY=VALUE"}},
		{"otlp TLS options without TLS", nil, []string{"vsock-to-udp-server", "--to", "otlphttp://127.0.0.1:4318", "--otlp-insecure-skip-verify"}, []string{"otlphttps://"}},
		{"otlp options without otlp", nil, []string{"vsock-to-udp-server", "--otlp-header", "a=b"}, []string{"--otlp-header needs an OTLP destination", "udp://127.0.0.1:6831"}},
		{"otlp options beside --dump-only", nil, []string{"kata-trace-forwarder", "--dump-only", "--otlp-header", "a=b"}, []string{"--otlp-header needs an OTLP destination", "jsonl"}},
		{"otlp TLS options to the default endpoint", nil, []string{"kata-trace-forwarder", "--otlp-ca-file", "/etc/hostname"}, []string{"--otlp-ca-file needs a TLS destination", "otlp://localhost:4317"}},
		{"otlp TLS option from env to the default endpoint", []string{"KATATRACE_OTLP_CA_FILE=/etc/hostname"}, []string{"kata-trace-forwarder"}, []string{"--otlp-ca-file (from $KATATRACE_OTLP_CA_FILE) needs a TLS destination"}},
		{"otlp CA file missing", nil, []string{"vsock-to-udp-server", "--to", "otlps://127.0.0.1:4317", "--otlp-ca-file", "/nonexistent/ca.pem"}, []string{"--otlp-ca-file", "/nonexistent/ca.pem", "no such file"}},
		{"otlp CA file missing, from env", []string{"OTEL_EXPORTER_OTLP_ENDPOINT=https://127.0.0.1:4317", "OTEL_EXPORTER_OTLP_CERTIFICATE=/nonexistent/ca.pem"}, []string{"kata-trace-forwarder"}, []string{"$OTEL_EXPORTER_OTLP_[TRACES_]CERTIFICATE", "/nonexistent/ca.pem"}},
		{"host drain timeout 0", nil, []string{"vsock-to-udp-server", "--drain-timeout", "0s"}, []string{"--drain-timeout must be positive"}},
		{"handover socket relative", nil, []string{"kata-trace-forwarder", "--handover-socket", "run/k.sock"}, []string{"--handover-socket", "give an absolute path"}},
		{"handover socket unclean", []string{"KATATRACE_HANDOVER_SOCKET=/run//k.sock"}, []string{"vsock-to-udp-server"}, []string{"--handover-socket (from $KATATRACE_HANDOVER_SOCKET)", "clean form (/run/k.sock)"}},
		{"handover socket too long", nil, []string{"vsock-to-text-server", "--handover-socket", "/" + strings.Repeat("x", 100)}, []string{"--handover-socket", "at most 90"}},
		{"handover resume 0", nil, []string{"kata-trace-forwarder", "--handover-socket", "/run/k.sock", "--handover-resume", "0s"}, []string{"--handover-resume", "positive"}},
		{"handover socket beside a store", nil, []string{"kata-trace-forwarder", "--handover-socket", "/run/k.sock", "--fd-store-max", "8"}, []string{"--handover-socket", "not both"}},
		{"burst below a datagram", nil, []string{"vsock-to-udp-server", "--guest-burst", "1KiB"}, []string{"--guest-burst", "65535"}},
		{"forwarder: bad CID", nil, []string{"kata-trace-forwarder", "--vsock-cid", "two"}, []string{"--vsock-cid", `"two" is not a CID`}},
		{"forwarder: blank trace name", nil, []string{"kata-trace-forwarder", "--trace-name", " "}, []string{"--trace-name", "blank"}},
		{"forwarder: OTLP/gRPC with a path", nil, []string{"kata-trace-forwarder", "--otlp-endpoint", "http://127.0.0.1:4317/otlp"}, []string{"--otlp-endpoint", "takes no path"}},
		{"forwarder: bad OTLP scheme", nil, []string{"kata-trace-forwarder", "--otlp-endpoint", "ftp://x:1"}, []string{"--otlp-endpoint", "ftp://x:1"}},
		{"forwarder: empty Jaeger host", nil, []string{"kata-trace-forwarder", "--jaeger-host", ""}, []string{"--jaeger-host", "empty"}},
		{"forwarder: socket path as a one-slash address", nil, []string{"kata-trace-forwarder", "--socket-path", "unix:/x/clh.sock"}, []string{"give the path: --socket-path /x/clh.sock "}},
		{"forwarder: socket path with a glob in Firecracker's name", nil, []string{"kata-trace-forwarder", "--socket-path", "/run/vc/firecracker/*/root/*.hvsock"}, []string{"--socket-path /run/vc/firecracker/*/root/kata.hvsock "}},
		{"metrics address example", nil, []string{"vsock-to-udp-server", "--metrics-listen", "vsock://x"}, []string{"--metrics-listen", "example: vsock://any:9464"}},
		{"forwarder: Jaeger port 0", nil, []string{"kata-trace-forwarder", "--jaeger-port", "0"}, []string{"--jaeger-port", "must not be 0"}},
		{"forwarder: two sources", nil, []string{"kata-trace-forwarder", "--from", "tcp://127.0.0.1:1", "--socket-path", "/run/x"}, []string{"--from", "not both"}},
		{"a VMM's own socket", nil, []string{"vsock-to-udp-server", "--from", "unix:///run/vc/vm/*/clh.sock"}, []string{"--from", "clh.sock is the VMM's own hybrid-vsock socket", "come to unix:///run/vc/vm/*/clh.sock_6831"}},
		{"a VMM's own socket, journal", nil, []string{"vsock-to-text-server", "--from", "unix:///run/kata/ID/ch-vm.sock"}, []string{"--from", "ch-vm.sock is the VMM's own", "unix:///run/kata/ID/ch-vm.sock_5140"}},
		{"a VMM's own socket, the vsock --from's port", nil, []string{"vsock-to-udp-server", "--from", "vsock://any:7000,unix:///run/kata/*/root/kata.hvsock"}, []string{"--from", "unix:///run/kata/*/root/kata.hvsock_7000"}},
		{"forwarder: a VMM's own socket", nil, []string{"kata-trace-forwarder", "--from", "unix:///run/vc/firecracker/*/root/kata.hvsock"}, []string{"--from", "kata.hvsock is the VMM's own", "kata.hvsock_10240"}},
		// A generic example has the role's port: the forwarder's 10240, the
		// journal's 5140, Jaeger's 6831.
		{"forwarder: example of a VMM's own socket", nil, []string{"kata-trace-forwarder", "--from", "unix:///run/vc/vm/*/clh.sock"}, []string{"(example: unix:///run/vc/firecracker/ID/root/kata.hvsock_10240)"}},
		{"forwarder: example of a bad vsock --from", nil, []string{"kata-trace-forwarder", "--from", "vsock://any:x"}, []string{"(example: vsock://any:10240)"}},
		{"forwarder: example of a --from without a scheme", nil, []string{"kata-trace-forwarder", "--from", "nope"}, []string{"(example: vsock://any:10240)"}},
		{"forwarder: example of a bad tcp --from", nil, []string{"kata-trace-forwarder", "--from", "tcp://x"}, []string{"(example: tcp://127.0.0.1:10240)"}},
		{"journal: example of a two-slash --from", nil, []string{"vsock-to-text-server", "--from", "unix://x"}, []string{"(example: unix:///run/vc/firecracker/ID/root/kata.hvsock_5140)"}},
		{"journal: example of a bad vsock --from", nil, []string{"vsock-to-text-server", "--from", "vsock://x"}, []string{"(example: vsock://any:5140)"}},
		{"journal: example of a pattern in the name", nil, []string{"vsock-to-text-server", "--from", "unix:///run/kata/*/x*_5140"}, []string{"(example: unix:///run/vc/firecracker/ID/root/kata.hvsock_5140)"}},
		{"forwarder: example of a bad --socket-path glob", nil, []string{"kata-trace-forwarder", "--socket-path", "/run/[/clh.sock"}, []string{"bad pattern", "(example: --socket-path /run/vc/vm/*/clh.sock)"}},
		{"guest journal: example of an any CID", nil, []string{"kata-journald-host-redirect", "--to", "vsock://any:5140"}, []string{`one CID, not "any" (example: vsock://2:5140)`}},
		{"guest journal: example of a bad --to", nil, []string{"kata-journald-host-redirect", "--to", "nope"}, []string{"(example: vsock://2:5140)"}},
		{"jaeger: example of a bad vsock --from", nil, []string{"vsock-to-udp-server", "--from", "vsock://x"}, []string{"(example: vsock://any:6831)"}},
		{"jaeger: example of a VMM's own socket", nil, []string{"vsock-to-udp-server", "--from", "unix:///run/kata/ID/ch-vm.sock"}, []string{"(example: unix:///run/vc/firecracker/ID/root/kata.hvsock_6831)"}},
		{"forwarder: OpenVMM's own socket", nil, []string{"kata-trace-forwarder", "--from", "unix:///run/kata/*/vsock.sock"}, []string{"--from", "vsock.sock is the VMM's own hybrid-vsock socket (OpenVMM, runtime-rs)", "unix:///run/kata/*/vsock.sock_10240"}},
		{"forwarder: a VMM's own socket, --vsock-port", nil, []string{"kata-trace-forwarder", "--vsock-port", "1024", "--from", "unix:///run/vc/vm/*/clh.sock"}, []string{"--from", "unix:///run/vc/vm/*/clh.sock_1024"}},
		{"forwarder: empty socket path", nil, []string{"kata-trace-forwarder", "--socket-path", ""}, []string{"--socket-path: empty", "--socket-path /run/vc/vm/ID/clh.sock", "leave the flag out"}},
		{"forwarder: empty socket path in a list", nil, []string{"kata-trace-forwarder", "--socket-path", "/run/a/clh.sock,,/run/b/clh.sock"}, []string{"--socket-path: empty"}},
		{"forwarder: relative socket path", nil, []string{"kata-trace-forwarder", "--socket-path", "vm/clh.sock"}, []string{"--socket-path", `"vm/clh.sock" is relative`, "/vm/clh.sock (the forwarder listens on /"}},
		{"forwarder: socket path as an address", nil, []string{"kata-trace-forwarder", "--socket-path", "unix:///x/clh.sock"}, []string{"--socket-path", "give the path: --socket-path /x/clh.sock "}},
		{"forwarder: socket path as a two-slash address", nil, []string{"kata-trace-forwarder", "--socket-path", "unix://x/clh.sock"}, []string{"give the path: --socket-path /x/clh.sock "}},
		{"forwarder: socket path as a vsock address", nil, []string{"kata-trace-forwarder", "--socket-path", "vsock://any:10240"}, []string{"--socket-path", "a path, not an address", "--from"}},
		{"forwarder: socket path with its port", nil, []string{"kata-trace-forwarder", "--socket-path", "/x/clh.sock_10240"}, []string{"--socket-path", "ends in _PORT already", "appends _10240", "--socket-path /x/clh.sock "}},
		{"forwarder: socket path with a glob in its name", nil, []string{"kata-trace-forwarder", "--socket-path", "/run/vc/vm/*/*.sock"}, []string{"--socket-path", "not in the socket's name", "--socket-path /run/vc/vm/*/clh.sock "}},
		{"forwarder: socket path with a bad glob", nil, []string{"kata-trace-forwarder", "--socket-path", "/run/[/clh.sock"}, []string{"--socket-path: invalid address", "bad pattern"}},
		{"forwarder: tiny span limit", nil, []string{"kata-trace-forwarder", "--max-span-bytes", "10B"}, []string{"--max-span-bytes", "1KiB to 1GiB"}},
		{"held below a chunk", nil, []string{"vsock-to-udp-server", "--max-held-bytes-per-guest", "100KiB"}, []string{"--max-held-bytes-per-guest", "256KiB to 1TiB"}},
		{"held total below a guest's", nil, []string{"vsock-to-text-server", "--max-held-bytes", "1MiB"}, []string{"--max-held-bytes", "less than one guest's", "16MiB"}},
		{"no collector workers", nil, []string{"vsock-to-udp-server", "--to", "http://127.0.0.1:14268/api/traces", "--collector-workers", "0"}, []string{"--collector-workers", "0: give 1 to 1024"}},
		{"collector timeout zero", nil, []string{"kata-trace-forwarder", "--to", "http://127.0.0.1:14268/api/traces", "--collector-timeout", "0s"}, []string{"--collector-timeout", "give a positive time"}},
		{"collector workers for udp", nil, []string{"vsock-to-udp-server", "--to", "udp://127.0.0.1:6831", "--collector-workers", "4"}, []string{"--collector-workers needs a collector or OTLP destination", "udp://127.0.0.1:6831"}},
		{"collector timeout for OTLP", []string{"KATATRACE_COLLECTOR_TIMEOUT=5s"}, []string{"kata-trace-forwarder", "--to", "otlp://127.0.0.1:4317"}, []string{"--collector-timeout (from $KATATRACE_COLLECTOR_TIMEOUT) needs a Jaeger collector", "--otlp-timeout"}},
		{"forwarder: a span beyond a guest's room", nil, []string{"kata-trace-forwarder", "--max-span-bytes", "32MiB", "--queue-bytes", "64MiB"}, []string{"--max-held-bytes-per-guest", "cannot hold one frame", "32MiB", "give at least"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel() // each only parses its flags and exits
			usageError(t, tt.env, tt.args, tt.want, nil)
		})
	}
}

// usageError runs args (a role and its arguments) with env added, and
// checks that it exits 2 with an error holding every want and no not; it
// returns the error output.
func usageError(t *testing.T, env, args, want, not []string) string {
	t.Helper()
	code, _, errOut := run(t, env, args[0], args[1:]...)
	if code != 2 {
		t.Fatalf("exit %d, want 2\n%s", code, errOut)
	}
	for _, w := range want {
		if !strings.Contains(errOut, w) {
			t.Errorf("error lacks %q:\n%s", w, errOut)
		}
	}
	for _, w := range not {
		if strings.Contains(errOut, w) {
			t.Errorf("error holds %q:\n%s", w, errOut)
		}
	}
	return errOut
}

func TestLinks(t *testing.T) {
	dir := t.TempDir()
	for range 2 { // idempotent
		if code, _, errOut := run(t, nil, roles.BinaryName, "links", dir); code != 0 {
			t.Fatalf("links: %d\n%s", code, errOut)
		}
	}
	self, _ := os.Executable()
	self, _ = filepath.EvalSymlinks(self)
	for _, r := range roles.All() {
		if got, err := os.Readlink(filepath.Join(dir, r.Name)); err != nil || got != self {
			t.Errorf("%s -> %q, %v; want %s", r.Name, got, err, self)
		}
	}
	// A file that is not a symlink is never replaced.
	os.Remove(filepath.Join(dir, "vsock-to-text-server"))
	os.WriteFile(filepath.Join(dir, "vsock-to-text-server"), []byte("mine"), 0o644)
	code, _, errOut := run(t, nil, roles.BinaryName, "links", dir)
	if b, _ := os.ReadFile(filepath.Join(dir, "vsock-to-text-server")); code == 0 || string(b) != "mine" || !strings.Contains(errOut, "not a symlink") {
		t.Fatalf("links over a file: exit %d, file %q\n%s", code, b, errOut)
	}
}

// notifySocket is a unixgram socket standing in for systemd's.
func notifySocket(t *testing.T) (*net.UnixConn, string) {
	path := filepath.Join(testutil.SockDir(t), "notify")
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, path
}

// readNotify reads the next state sent to the notify socket, passing
// over STATUS= lines (which it returns) and the file descriptor store's
// traffic, and wants it to be want.
func readNotify(t *testing.T, c *net.UnixConn, want string) (statuses []string) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 4096)
	for {
		n, err := c.Read(buf)
		got := string(buf[:n])
		if err == nil && strings.HasPrefix(got, "STATUS=") && !strings.HasPrefix(want, "STATUS=") {
			statuses = append(statuses, got)
			continue
		}
		if err == nil && (strings.HasPrefix(got, "FDSTORE=") || strings.HasPrefix(got, "FDSTOREREMOVE=")) {
			continue
		}
		if err != nil || got != want {
			t.Fatalf("notify socket got %q, %v; want %q", got, err, want)
		}
		return statuses
	}
}

func TestSdNotifyReadyAndStopping(t *testing.T) {
	for _, role := range []string{"vsock-to-udp-server", "vsock-to-text-server", "jaeger-client-socat-redirector"} {
		t.Run(role, func(t *testing.T) {
			ns, nsPath := notifySocket(t)
			dir := testutil.SockDir(t)
			host := filepath.Join(dir, "h_6831")
			sink := testutil.NewUDPSink(t)
			args := []string{"--from", "unix://" + host, "--to", sink.Addr()}
			if role == "vsock-to-text-server" {
				args = []string{"--from", "unix://" + host}
			}
			if role == "jaeger-client-socat-redirector" {
				args = []string{"--from", "unixgram://" + filepath.Join(dir, "in"), "--to", "unix://" + host}
			}
			p := start(t, []string{"NOTIFY_SOCKET=" + nsPath}, role, args...)
			readNotify(t, ns, "READY=1")
			// READY means bound: the socket is there to use.
			bound := host
			if role == "jaeger-client-socat-redirector" {
				bound = filepath.Join(dir, "in")
			}
			if _, err := os.Stat(bound); err != nil {
				t.Fatalf("READY=1 before the socket was bound: %v", err)
			}
			p.Signal(syscall.SIGTERM)
			readNotify(t, ns, "STOPPING=1")
			if code := p.Wait(10 * time.Second); code != 0 {
				t.Fatalf("exit %d after SIGTERM\n%s", code, p.Stderr.String())
			}
		})
	}
}
