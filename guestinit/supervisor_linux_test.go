package guestinit

import (
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/katatrace/katatrace/internal/testutil"
	"golang.org/x/sys/unix"
)

// newTestSupervisor supervises as a subreaper, as the shim does when it is
// not PID 1: orphans of the children come back to this test process.
func newTestSupervisor(t *testing.T, stopTimeout time.Duration) *Supervisor {
	t.Helper()
	if err := SetSubreaper(); err != nil {
		t.Fatal(err)
	}
	s := NewSupervisor(slog.New(slog.DiscardHandler), stopTimeout)
	t.Cleanup(s.Stop)
	return s
}

func sh(script string) []string { return []string{"/bin/sh", "-c", script} }

var stdio = []*os.File{os.Stdin, os.Stdout, os.Stderr}

func waitExit(t *testing.T, ch <-chan ProcessExit) ProcessExit {
	t.Helper()
	select {
	case e := <-ch:
		return e
	case <-time.After(30 * time.Second):
		t.Fatal("the child's exit never came")
		return ProcessExit{}
	}
}

func TestSupervisorReapsOrphans(t *testing.T) {
	s := newTestSupervisor(t, time.Second)
	_, exited, err := s.Start(sh("(sleep 0.05 &) ; (sleep 0.05 &) ; exit 3"), nil, stdio)
	if err != nil {
		t.Fatal(err)
	}
	if e := waitExit(t, exited); e.Code() != 3 || s.Reason() != "agent exited" {
		t.Fatalf("exit %s (%s), want 3 by itself", e, s.Reason())
	}
	testutil.Eventually(t, 10*time.Second, "both orphans reaped", func() bool { return s.Orphans() == 2 })
	// A helper's exit goes to its own waiter, never counted as an orphan.
	if e, err := s.Run(sh("exit 5"), nil, stdio, 10*time.Second); err != nil || e.Code() != 5 {
		t.Fatalf("Run = %s, %v; want exit 5", e, err)
	}
	if n := s.Orphans(); n != 2 {
		t.Fatalf("orphans = %d after a helper ran, want 2", n)
	}
}

func TestSupervisorPassesSignals(t *testing.T) {
	s := newTestSupervisor(t, 10*time.Second)
	exited := startTrapped(t, s, "trap 'exit 7' TERM", "sleep 0.01", syscall.SIGTERM)
	if e := waitExit(t, exited); e.Code() != 7 || s.Reason() != "stopped by terminated" {
		t.Fatalf("exit %s (%s), want 7 from the agent's own handler", e, s.Reason())
	}
}

func TestSupervisorKillsAfterStopTimeout(t *testing.T) {
	s := newTestSupervisor(t, 100*time.Millisecond)
	// A busy loop: no child of the agent's outlives it as an orphan.
	exited := startTrapped(t, s, "trap '' TERM INT", ":", syscall.SIGINT)
	if e := waitExit(t, exited); e.Code() != 137 || s.Reason() != "stopped by interrupt" {
		t.Fatalf("exit %s (%s), want SIGKILL (137) after the stop timeout", e, s.Reason())
	}
}

// startTrapped starts an agent that sets trap, says so, and loops running
// step; then it sends this process sig, which the supervisor passes on.
// The agent's word comes first, so the signal cannot beat its trap.
func startTrapped(t *testing.T, s *Supervisor, trap, step string, sig syscall.Signal) <-chan ProcessExit {
	t.Helper()
	ready := t.TempDir() + "/ready"
	_, exited, err := s.Start(sh(trap+"; : > "+ready+"; while :; do "+step+"; done"), nil, stdio)
	if err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, "the agent's trap", func() bool { _, err := os.Stat(ready); return err == nil })
	if err := syscall.Kill(os.Getpid(), sig); err != nil {
		t.Fatal(err)
	}
	return exited
}

// TestAgentStartsWithDefaultSignals: the agent gets no signal ignored from
// its init (SigIgn in its status is 0 for the job-control signals, which
// the supervisor catches for itself).
func TestAgentStartsWithDefaultSignals(t *testing.T) {
	s := newTestSupervisor(t, time.Second)
	out, err := os.CreateTemp(t.TempDir(), "status")
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	_, exited, err := s.Start(sh("grep SigIgn /proc/self/status"), nil, []*os.File{os.Stdin, out, os.Stderr})
	if err != nil {
		t.Fatal(err)
	}
	if e := waitExit(t, exited); e.Code() != 0 {
		t.Fatalf("grep: %s", e)
	}
	b, err := os.ReadFile(out.Name())
	if err != nil {
		t.Fatal(err)
	}
	var mask uint64
	if _, err := fmt.Sscanf(strings.TrimSpace(string(b)), "SigIgn:\t%x", &mask); err != nil {
		t.Fatalf("%q: %v", b, err)
	}
	const jobControl = 1<<(syscall.SIGTSTP-1) | 1<<(syscall.SIGTTIN-1) | 1<<(syscall.SIGTTOU-1)
	if mask&jobControl != 0 {
		t.Fatalf("the agent starts with SigIgn %#x: job-control signals ignored", mask)
	}
}

// TestSupervisorReapsWithoutSIGCHLD: a SIGCHLD that never arrives (lost to
// a full channel) does not keep a child's exit from its waiter.
func TestSupervisorReapsWithoutSIGCHLD(t *testing.T) {
	s := newTestSupervisor(t, time.Second)
	signal.Stop(s.sigs) // from now on no SIGCHLD reaches the loop
	_, exited, err := s.Start(sh("exit 7"), nil, stdio)
	if err != nil {
		t.Fatal(err)
	}
	if e := waitExit(t, exited); e.Code() != 7 {
		t.Fatalf("exit %s, want 7", e)
	}
}

// TestSupervisorStopTwice: stopping is safe to repeat (the shim's deferred
// Stop runs after an explicit one on some paths).
func TestSupervisorStopTwice(t *testing.T) {
	s := newTestSupervisor(t, time.Second) // its cleanup stops it again
	s.Stop()
	s.Stop()
}

// TestSupervisorEarlySIGTERMStartsTheStopTimeout: SIGTERM before the
// agent started is passed on as it starts, and starts the stop timeout as
// one after would: an agent that ignores it is killed, and the reason
// says it was stopped. The agent starts with SIGTERM blocked (the mask
// of the thread that starts it), so that it ignores the signal before it
// can be delivered, whenever the signal comes.
func TestSupervisorEarlySIGTERMStartsTheStopTimeout(t *testing.T) {
	s := newTestSupervisor(t, 100*time.Millisecond)
	if err := syscall.Kill(os.Getpid(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, "SIGTERM kept for the agent", func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return len(s.pending) == 1
	})
	pid, exited := startBlocking(t, s, unix.SIGTERM, sh("trap '' TERM; while :; do :; done"))
	select {
	case e := <-exited:
		if e.Code() != 137 || s.Reason() != "stopped by terminated" {
			t.Fatalf("exit %s (%s), want SIGKILL (137) after the stop timeout, stopped by SIGTERM", e, s.Reason())
		}
	case <-time.After(10 * time.Second):
		_ = syscall.Kill(pid, syscall.SIGKILL) // not reaped: still ours
		<-exited
		t.Fatal("an agent that ignores an early SIGTERM was never killed")
	}
}

// startBlocking starts the main child with sig blocked: from a thread of
// this process that blocks it, whose mask the child inherits.
func startBlocking(t *testing.T, s *Supervisor, sig unix.Signal, argv []string) (int, <-chan ProcessExit) {
	t.Helper()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var set, old unix.Sigset_t
	set.Val[(sig-1)/64] |= 1 << ((sig - 1) % 64)
	if err := unix.PthreadSigmask(unix.SIG_BLOCK, &set, &old); err != nil {
		t.Fatal(err)
	}
	defer unix.PthreadSigmask(unix.SIG_SETMASK, &old, nil)
	pid, exited, err := s.Start(argv, nil, stdio)
	if err != nil {
		t.Fatal(err)
	}
	return pid, exited
}
