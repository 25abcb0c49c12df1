//go:build linux

package hostrelay

import (
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/katatrace/katatrace/endpoint"
	"github.com/katatrace/katatrace/internal/testutil"
)

// asNobody runs f on a thread of its own that has given up root (uid and
// gid 65534, no groups, so no capability): Linux checks a file's access
// with the calling thread's credentials, and the raw calls change this
// thread's alone (Go's own would change every thread's). The thread ends
// with f: it is never unlocked.
func asNobody(t *testing.T, f func()) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: a directory root's, and a process that is not root")
	}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		for _, c := range [][4]uintptr{{unix.SYS_SETGROUPS, 0, 0, 0}, {unix.SYS_SETRESGID, 65534, 65534, 65534}, {unix.SYS_SETRESUID, 65534, 65534, 65534}} {
			if _, _, e := unix.RawSyscall(c[0], c[1], c[2], c[3]); e != 0 {
				errc <- e
				return
			}
		}
		f()
		errc <- nil
	}()
	if err := <-errc; err != nil {
		t.Fatalf("giving up root: %v", err)
	}
}

// TestWatchSaysWhyAVMsDirectoryRefusesIt: a relay that is not root,
// watching VM directories made as Kata makes them (root's, mode 0750),
// says at ERROR that the VM's socket cannot be made, why, and what to
// change, once (not at every rescan); a pattern whose directory it may
// not read is said to be that, not "a misspelt path".
func TestWatchSaysWhyAVMsDirectoryRefusesIt(t *testing.T) {
	base := testutil.SockDir(t)
	vms := filepath.Join(base, "vc", "vm") // Kata's /run/vc/vm: root's, 0750
	rs := filepath.Join(base, "kata")      // a tree the relay may read, its VM directories Kata's
	for _, d := range []string{filepath.Join(vms, "5e1f"), filepath.Join(rs, "77ab")} {
		if err := os.MkdirAll(d, 0o750); err != nil {
			t.Fatal(err)
		}
	}
	// The VMs have started: their VMMs' sockets are there.
	testutil.VMMSocket(t, filepath.Join(vms, "5e1f", "clh.sock"))
	testutil.VMMSocket(t, filepath.Join(rs, "77ab", "ch-vm.sock"))
	for _, d := range []string{base, filepath.Join(base, "vc"), rs} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	var out lockedBuffer
	log := slog.New(slog.NewTextHandler(&out, nil))
	var listening int
	var unreadable, unreadableHint, typo, typoHint, vmDir, vmDirHint string
	asNobody(t, func() {
		w, err := endpoint.WatchPattern(rs+"/*/ch-vm.sock_10240", log, nil, func(net.Listener, string) {})
		if err != nil {
			t.Error(err)
			return
		}
		w.Rescan()
		w.Rescan()
		listening = w.Listening()
		vmDir = w.Missing()
		vmDirHint = endpoint.MissingHint(vmDir)
		_ = w.Close()
		for _, p := range []struct {
			pattern string
			m, hint *string
		}{
			{vms + "/*/clh.sock_10240", &unreadable, &unreadableHint},
			{base + "/vc/firecraker/*/root/kata.hvsock_10240", &typo, &typoHint},
		} {
			w, err := endpoint.WatchPattern(p.pattern, log, nil, func(net.Listener, string) {})
			if err != nil {
				t.Error(err)
				return
			}
			*p.m = w.Missing()
			*p.hint = endpoint.MissingHint(*p.m)
			_ = w.Close()
		}
	})
	logged := out.String()
	if listening != 0 {
		t.Errorf("listening on %d sockets in a directory root's, mode 0750", listening)
	}
	sock := filepath.Join(rs, "77ab", "ch-vm.sock_10240")
	if n := strings.Count(logged, "level=ERROR msg=\"VM found, but its socket cannot be created"); n != 1 {
		t.Errorf("said %d times at ERROR that the VM's socket cannot be made, want once:\n%s", n, logged)
	}
	for _, want := range []string{"path=" + sock, "permission denied", "run as root"} {
		if !strings.Contains(logged, want) {
			t.Errorf("the log lacks %q:\n%s", want, logged)
		}
	}
	if n := strings.Count(logged, `msg="cannot watch a directory" dir=`+filepath.Join(rs, "77ab")); n != 1 {
		t.Errorf("said %d times that the VM's directory cannot be watched, want once:\n%s", n, logged)
	}
	if unreadable != vms+"/*" || !strings.Contains(unreadableHint, "run as root") || strings.Contains(unreadableHint, "misspelt") {
		t.Errorf("an unreadable VM tree: missing %q, hint %q", unreadable, unreadableHint)
	}
	if vmDir != rs+"/*/ch-vm.sock" || !strings.Contains(vmDirHint, "run as root") {
		t.Errorf("VM directories it may not look into: missing %q, hint %q", vmDir, vmDirHint)
	}
	if typo != base+"/vc/firecraker" || !strings.Contains(typoHint, "misspelt") {
		t.Errorf("a misspelt tree: missing %q, hint %q", typo, typoHint)
	}
}
