package roles_test

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/katatrace/katatrace/internal/katatest"
	"github.com/katatrace/katatrace/internal/testutil"
)

func init() { testHelpers["katatrace-test-no-vsock"] = noVsockSeccomp }

// seccompArch is the audit architecture of the system calls a filter
// sees, where this test knows it (little-endian: the socket family is
// the low half of args[0], at offset 16 of seccomp_data).
var seccompArch = map[string]uint32{"amd64": unix.AUDIT_ARCH_X86_64, "arm64": unix.AUDIT_ARCH_AARCH64}

// noVsockSeccomp runs ROLE ARGS... under a seccomp filter that refuses
// socket(AF_VSOCK) with EPERM, as containerd's and CRI-O's default
// profiles do: installed on this thread, then kept across the exec of
// the role, as a container runtime's is: katatrace-test-no-vsock ROLE ARGS...
func noVsockSeccomp(args []string) int {
	runtime.LockOSThread()
	const (
		ld  = unix.BPF_LD | unix.BPF_W | unix.BPF_ABS
		jeq = unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K
		ret = unix.BPF_RET | unix.BPF_K
	)
	prog := []unix.SockFilter{
		{Code: ld, K: 4}, // arch
		{Code: jeq, K: seccompArch[runtime.GOARCH], Jf: 5},
		{Code: ld, K: 0}, // nr
		{Code: jeq, K: unix.SYS_SOCKET, Jf: 3},
		{Code: ld, K: 16}, // args[0], the family
		{Code: jeq, K: unix.AF_VSOCK, Jf: 1},
		{Code: ret, K: unix.SECCOMP_RET_ERRNO | uint32(unix.EPERM)},
		{Code: ret, K: unix.SECCOMP_RET_ALLOW},
	}
	fprog := unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]}
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		fmt.Fprintln(os.Stderr, "no_new_privs:", err)
		return 3
	}
	if _, _, e := unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, 0, uintptr(unsafe.Pointer(&fprog))); e != 0 {
		fmt.Fprintln(os.Stderr, "seccomp:", e)
		return 3
	}
	role := filepath.Join(filepath.Dir(os.Args[0]), args[0])
	err := syscall.Exec(role, args, os.Environ())
	fmt.Fprintln(os.Stderr, "exec:", err)
	return 3
}

// TestVsockRefusedBySeccompLeavesOthersServing: under a seccomp filter
// refusing socket(AF_VSOCK) with EPERM (a container runtime's default
// profile), the forwarder with a vsock --from and a unix one serves an
// agent through the unix one, says once why vsock is refused and what to
// do, and counts the vsock --from as listening on nothing (for
// KatatraceFromNotListening); with the vsock --from alone, it fails the
// start with that cause. Nothing connects to any vsock CID; the filter
// keeps the socket from being made at all.
func TestVsockRefusedBySeccompLeavesOthersServing(t *testing.T) {
	if seccompArch[runtime.GOARCH] == 0 {
		t.Skipf("no seccomp filter written for %s", runtime.GOARCH)
	}
	// A port of the test's own; never bound (the filter refuses the
	// socket before), and never connected to.
	vsock := fmt.Sprintf("vsock://any:%d", 40000+os.Getpid()%20000)
	t.Run("beside a unix --from", func(t *testing.T) {
		sock := filepath.Join(testutil.SockDir(t), "kata.hvsock_10240")
		mport := testutil.FreePort(t, "tcp")
		p := start(t, nil, "katatrace-test-no-vsock", "kata-trace-forwarder", "--from", vsock+",unix://"+sock, "--to", "jsonl",
			"--metrics-listen", fmt.Sprintf("tcp://127.0.0.1:%d", mport))
		p.WaitLog("msg=ready")
		katatest.Send(t, sock, katatest.Capture(t, "json-otel017-api"))
		testutil.Eventually(t, 10*time.Second, "6 spans out", func() bool { return strings.Count(p.Stdout.String(), "\n") >= 6 })
		log := p.Stderr.String()
		for _, want := range []string{"vsock sockets refused: no vhost-vsock guest (QEMU) can connect; the other --from serve",
			"from=" + vsock, "operation not permitted", "seccomp filter refuses vsock sockets"} {
			if !strings.Contains(log, want) {
				t.Errorf("the log lacks %q:\n%s", want, log)
			}
		}
		if n := strings.Count(log, "vsock sockets refused"); n != 1 {
			t.Errorf("the refusal said %d times, want once:\n%s", n, log)
		}
		for from, want := range map[string]float64{vsock: 0, "unix://" + sock: 1} {
			if v := sample(t, mport, fmt.Sprintf("katatrace_forwarder_listeners{from=%q}", from)); v != want {
				t.Errorf("katatrace_forwarder_listeners{from=%q} = %v, want %v", from, v, want)
			}
		}
		if code, body := readyz(t, mport); code != http.StatusOK {
			t.Errorf("/readyz: %d %q, want 200: the unix --from serves", code, body)
		}
		p.Signal(os.Interrupt)
		if code := p.Wait(10 * time.Second); code != 0 {
			t.Fatalf("exit %d\n%s", code, p.Stderr.String())
		}
	})
	t.Run("alone", func(t *testing.T) {
		p := start(t, nil, "katatrace-test-no-vsock", "kata-trace-forwarder", "--from", vsock, "--to", "jsonl")
		if code := p.Wait(10 * time.Second); code != 1 {
			t.Fatalf("exit %d, want 1\n%s", code, p.Stderr.String())
		}
		for _, want := range []string{"--from " + vsock + ": cannot listen", "socket: operation not permitted", "seccomp filter refuses vsock sockets"} {
			if !strings.Contains(p.Stderr.String(), want) {
				t.Errorf("the error lacks %q:\n%s", want, p.Stderr.String())
			}
		}
	})
}
