package testutil

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// SyncBuffer is a bytes.Buffer that a process may write while a test reads.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Proc is a process a test started; it is killed at cleanup if still running,
// and its stderr is logged if the test failed.
type Proc struct {
	t              testing.TB
	Cmd            *exec.Cmd
	Stdout, Stderr SyncBuffer
	done           chan struct{}
	err            error
}

// Start runs path with args, with env added to the test's environment.
func Start(t testing.TB, env []string, path string, args ...string) *Proc {
	t.Helper()
	return StartTo(t, nil, env, path, args...)
}

// StartTo is Start with the process's stdout going to w (a file, say)
// instead of p.Stdout.
func StartTo(t testing.TB, w io.Writer, env []string, path string, args ...string) *Proc {
	t.Helper()
	cmd := exec.Command(path, args...)
	cmd.Env = Env(env...)
	cmd.Stdout = w
	return StartCmd(t, cmd)
}

// Env is the environment of a katatrace process a test starts: the
// test's, without the variables that would change what it does (every
// KATATRACE_* flag twin and OpenTelemetry's OTEL_*, which a developer's
// shell or a CI runner may set), plus env.
func Env(env ...string) []string {
	out := slices.DeleteFunc(os.Environ(), func(kv string) bool {
		return strings.HasPrefix(kv, "KATATRACE_") || strings.HasPrefix(kv, "OTEL_")
	})
	return append(out, env...)
}

// StartCmd starts cmd as Start does; its stdout and stderr go to p.Stdout
// and p.Stderr unless cmd says where.
func StartCmd(t testing.TB, cmd *exec.Cmd) *Proc {
	t.Helper()
	p := &Proc{t: t, Cmd: cmd, done: make(chan struct{})}
	path, args := cmd.Path, cmd.Args[1:]
	if p.Cmd.Stdout == nil {
		p.Cmd.Stdout = &p.Stdout
	}
	if p.Cmd.Stderr == nil {
		p.Cmd.Stderr = &p.Stderr
	}
	if err := p.Cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.err = p.Cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = p.Cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("%s %s stderr:\n%s", path, strings.Join(args, " "), p.Stderr.String())
		}
	})
	return p
}

// Done is closed when the process has exited.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Wait returns the exit code, failing the test after timeout.
func (p *Proc) Wait(timeout time.Duration) int {
	p.t.Helper()
	select {
	case <-p.done:
	case <-time.After(timeout):
		p.t.Fatalf("%s still running after %v; stderr:\n%s", p.Cmd.Path, timeout, p.Stderr.String())
	}
	return p.Cmd.ProcessState.ExitCode()
}

// Signal sends sig to the process.
func (p *Proc) Signal(sig os.Signal) {
	if err := p.Cmd.Process.Signal(sig); err != nil {
		p.t.Fatal(err)
	}
}

// WaitLog waits for substr in the process's stderr (its log).
func (p *Proc) WaitLog(substr string) {
	p.t.Helper()
	Eventually(p.t, 15*time.Second, fmt.Sprintf("log %q", substr), func() bool {
		select {
		case <-p.done:
			p.t.Fatalf("%s exited early: %v; stderr:\n%s", p.Cmd.Path, p.err, p.Stderr.String())
		default:
		}
		return strings.Contains(p.Stderr.String(), substr)
	})
}
