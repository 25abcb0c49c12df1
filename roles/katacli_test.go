package roles_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/katatrace/katatrace/internal/katatest"
	"github.com/katatrace/katatrace/internal/testutil"
	"github.com/katatrace/katatrace/roles"
)

// TestKataVersionAndLevelFlags: Kata's forwarder's -V (clap 4, 3.19+) and
// -v (its version_short before) print the version, for every role and
// katatrace; -l is --log-level, and Kata's levels trace and critical are
// taken: trace logs what debug does, critical nothing at all.
func TestKataVersionAndLevelFlags(t *testing.T) {
	t.Parallel()
	for _, name := range append([]string{roles.BinaryName}, "kata-trace-forwarder", "vsock-to-udp-server", "jaeger-client-socat-redirector") {
		for _, flag := range []string{"-V", "-v", "--version"} {
			if code, out, errOut := run(t, nil, name, flag); code != 0 || out != name+" test\n" {
				t.Errorf("%s %s: exit %d, %q\n%s", name, flag, code, out, errOut)
			}
		}
	}
	for _, tt := range []struct {
		args   []string
		logged bool
	}{
		{[]string{"-l", "trace"}, true},
		{[]string{"--log-level=trace"}, true},
		{[]string{"-l", "critical"}, false},
	} {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			t.Parallel()
			ns, nsPath := notifySocket(t)
			sock := filepath.Join(testutil.SockDir(t), "clh.sock_10240")
			p := start(t, []string{"NOTIFY_SOCKET=" + nsPath}, "kata-trace-forwarder", append(tt.args, "--from", "unix://"+sock, "--dump-only")...)
			readNotify(t, ns, "READY=1")
			katatest.Send(t, sock, katatest.Capture(t, "json-otel017-api"))
			testutil.Eventually(t, 10*time.Second, "6 spans out", func() bool { return strings.Count(p.Stdout.String(), "\n") >= 6 })
			p.Signal(os.Interrupt)
			if code := p.Wait(10 * time.Second); code != 0 {
				t.Fatalf("exit %d\n%s", code, p.Stderr.String())
			}
			errOut := p.Stderr.String()
			if tt.logged && !strings.Contains(errOut, "level=DEBUG") {
				t.Fatalf("trace logs less than debug:\n%s", errOut)
			}
			if !tt.logged && errOut != "" {
				t.Fatalf("critical logged below critical:\n%s", errOut)
			}
		})
	}
}

// TestKataForwarderDestinations: --jaeger-host and --jaeger-port each
// alone take the other as Kata's default was (127.0.0.1, 6831), and
// --dump-only is taken bare (Kata before 3.19), with a value (3.19+:
// --dump-only=V, --dump-only V) and from its environment twin; false
// means false.
func TestKataForwarderDestinations(t *testing.T) {
	t.Parallel()
	t.Run("jaeger-port alone", func(t *testing.T) {
		t.Parallel()
		udp := testutil.NewUDPSink(t)
		_, port, _ := strings.Cut(strings.TrimPrefix(udp.Addr(), "udp://"), ":")
		sock := filepath.Join(testutil.SockDir(t), "clh.sock_10240")
		p := start(t, nil, "kata-trace-forwarder", "--jaeger-port", port, "--from", "unix://"+sock)
		p.WaitLog("to=udp://127.0.0.1:" + port)
		katatest.Send(t, sock, katatest.Capture(t, "bincode-otel014-api"))
		if got := udp.WaitFor(1, 10*time.Second); len(got) == 0 {
			t.Fatalf("no Jaeger datagram at 127.0.0.1:%s\n%s", port, p.Stderr.String())
		}
	})
	tests := []struct {
		name string
		env  []string
		args []string
		to   string // the destination the log names
	}{
		{"jaeger-host alone", nil, []string{"--jaeger-host", "127.0.0.2"}, "to=udp://127.0.0.2:6831"},
		{"dump-only bare", nil, []string{"--dump-only"}, "to=jsonl"},
		{"dump-only=true", nil, []string{"--dump-only=true"}, "to=jsonl"},
		{"dump-only VALUE", nil, []string{"--dump-only", "yes", "--trace-name", "x"}, "to=jsonl"},
		{"dump-only from env", []string{"KATATRACE_DUMP_ONLY=1"}, nil, "to=jsonl"},
		{"dump-only=false", nil, []string{"--dump-only=false"}, "to=otlp://localhost:4317"},
		{"dump-only false", nil, []string{"--dump-only", "false"}, "to=otlp://localhost:4317"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			sock := filepath.Join(testutil.SockDir(t), "clh.sock_10240")
			p := start(t, tt.env, "kata-trace-forwarder", append(tt.args, "--from", "unix://"+sock)...)
			p.WaitLog(`msg=listening`)
			p.Signal(os.Interrupt)
			if code := p.Wait(10 * time.Second); code != 0 || !strings.Contains(p.Stderr.String(), tt.to+"\n") {
				t.Fatalf("exit %d; want %s:\n%s", code, tt.to, p.Stderr.String())
			}
		})
	}
}

// TestUsageErrorsPointAtTheirHelp: a usage error names the help that
// answers it, the role's (as called: by its name or as katatrace ROLE)
// or the subcommand's, and reload without a process ID says so.
func TestUsageErrorsPointAtTheirHelp(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		args []string
		want []string
	}{
		{"role by name", []string{"kata-trace-forwarder", "--bogus"}, []string{"Run 'kata-trace-forwarder --help' for usage."}},
		{"role as subcommand", []string{roles.BinaryName, "kata-trace-forwarder", "--bogus"}, []string{"Run 'katatrace kata-trace-forwarder --help' for usage."}},
		{"role's validation", []string{roles.BinaryName, "vsock-to-udp-server", "--to", "tcp://127.0.0.1:1"}, []string{"Run 'katatrace vsock-to-udp-server --help' for usage."}},
		{"katatrace itself", []string{roles.BinaryName, "--bogus"}, []string{"Run 'katatrace --help' for usage."}},
		{"reload without a pid", []string{roles.BinaryName, "reload"}, []string{"error: reload: no process ID given (or 0): katatrace reload PID", "Run 'katatrace reload --help' for usage."}},
		{"reload of PID 1", []string{roles.BinaryName, "reload", "1"}, []string{"error: reload: 1 is not a role's process ID"}},
		{"dump-only with no yes or no", []string{"kata-trace-forwarder", "--dump-only", "maybe"}, []string{`--dump-only: "maybe" is not a yes or no`}},
		{"bad level", []string{"kata-trace-forwarder", "-l", "loud"}, []string{"--log-level", `"trace","debug","info","warn","error","critical"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			usageError(t, nil, tt.args, tt.want, []string{"reload: reload:"}) // the command named twice
		})
	}
}
