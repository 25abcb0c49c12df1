package guestinit

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// ProcessExit is how a child ended.
type ProcessExit struct {
	Pid    int
	Status unix.WaitStatus
	Rusage unix.Rusage
}

// Code is the exit code a shell would report: the status, or 128+signal.
func (e ProcessExit) Code() int {
	if e.Status.Signaled() {
		return 128 + int(e.Status.Signal())
	}
	return e.Status.ExitStatus()
}

func (e ProcessExit) String() string {
	if e.Status.Signaled() {
		return fmt.Sprintf("killed by signal %d (%s)", int(e.Status.Signal()), e.Status.Signal())
	}
	return fmt.Sprintf("exit status %d", e.Status.ExitStatus())
}

// Forwarded are the signals the main child gets when this process does.
var Forwarded = []os.Signal{unix.SIGTERM, unix.SIGINT, unix.SIGHUP, unix.SIGQUIT, unix.SIGUSR1, unix.SIGUSR2}

// Supervisor is what init is to the agent, in one loop as tini's: the one
// owner of Wait4 in this process (it reaps every child and orphan on
// SIGCHLD and hands the statuses of the processes it started to their
// waiters, so none is stolen), and the one that passes signals on to the
// main child. SIGTERM and SIGINT give the main child a stop timeout before
// SIGKILL. Nothing else in the process may wait for children (no os/exec
// Wait).
type Supervisor struct {
	log         *slog.Logger
	stopTimeout time.Duration
	sigs        chan os.Signal
	stopSigs    chan os.Signal // caught and dropped
	// arm starts the stop timeout in the loop: a stop signal that came
	// before the main child was passed on as it started.
	arm      chan struct{}
	done     chan struct{}
	loopDone chan struct{}
	orphans  atomic.Uint64
	stopOnce sync.Once

	mu      sync.Mutex
	waiters map[int]chan ProcessExit
	main    int         // the main child's pid, once started
	ended   bool        // the main child has been reaped: its pid may be anyone's now
	pending []os.Signal // arrived before the main child existed
	reason  string      // why the main child ended, if not by itself
}

// NewSupervisor starts watching children and the forwarded signals (from
// now on, so none is lost before the main child starts), and catches the
// terminal's stop signals, which must not stop an init.
func NewSupervisor(log *slog.Logger, stopTimeout time.Duration) *Supervisor {
	s := &Supervisor{
		log: log, stopTimeout: stopTimeout, waiters: map[int]chan ProcessExit{},
		sigs: make(chan os.Signal, 32), stopSigs: make(chan os.Signal, 1), arm: make(chan struct{}, 1),
		done: make(chan struct{}), loopDone: make(chan struct{}),
	}
	// The terminal's stop signals are caught, not ignored: an ignored
	// signal stays ignored across exec, and the agent must start with every
	// disposition at its default, as tini's restore_signals gives it.
	signal.Notify(s.stopSigs, stopSignals...)
	signal.Notify(s.sigs, append([]os.Signal{unix.SIGCHLD}, Forwarded...)...)
	go s.loop()
	return s
}

// stopSignals are the terminal's job-control signals, which must not stop
// an init.
var stopSignals = []os.Signal{unix.SIGTTIN, unix.SIGTTOU, unix.SIGTSTP}

// reapEvery is how often the loop reaps without a SIGCHLD, as tini does:
// signals of one kind coalesce, and a full channel drops them.
const reapEvery = time.Second

func (s *Supervisor) loop() {
	defer close(s.loopDone)
	s.reap() // children that ended before SIGCHLD was watched
	var kill <-chan time.Time
	tick := time.NewTicker(reapEvery)
	defer tick.Stop()
	for {
		select {
		case <-tick.C:
			s.reap()
		case sig := <-s.stopSigs:
			s.log.Debug("ignoring a job-control signal", "signal", sig.String())
		case sig := <-s.sigs:
			if sig == unix.SIGCHLD {
				s.reap()
				continue
			}
			if s.forward(sig) && kill == nil {
				kill = time.After(s.stopTimeout)
			}
		case <-s.arm:
			if kill == nil {
				kill = time.After(s.stopTimeout)
			}
		case <-kill:
			// Here, in the loop that reaps, the main child is either not
			// reaped yet or known ended: its pid is still its own.
			s.mu.Lock()
			pid, ended := s.main, s.ended
			s.mu.Unlock()
			if ended {
				continue
			}
			s.log.Warn("agent still running after the stop timeout; killing it", "pid", pid, "stop_timeout", s.stopTimeout.String())
			_ = unix.Kill(pid, unix.SIGKILL)
		case <-s.done:
			return
		}
	}
}

// forward passes sig to the main child (or keeps it until there is one);
// it reports whether the stop timeout starts.
func (s *Supervisor) forward(sig os.Signal) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.main == 0:
		s.pending = append(s.pending, sig)
		s.log.Info("signal before the agent started: it is passed on as the agent starts", "signal", sig.String())
		return false
	case s.ended:
		s.log.Debug("signal after the agent ended: nothing to pass it to", "signal", sig.String())
		return false
	}
	return s.passLocked(sig, "passing signal to the agent")
}

// passLocked passes sig to the main child; it reports whether the stop
// timeout starts: at the first SIGTERM or SIGINT, which also says why the
// child ended.
func (s *Supervisor) passLocked(sig os.Signal, msg string) bool {
	s.log.Info(msg, "signal", sig.String(), "pid", s.main)
	_ = unix.Kill(s.main, sig.(syscall.Signal))
	if (sig == unix.SIGTERM || sig == unix.SIGINT) && s.reason == "" {
		s.reason = "stopped by " + sig.String()
		return true
	}
	return false
}

// reap collects every child that has ended.
func (s *Supervisor) reap() {
	for {
		var e ProcessExit
		pid, err := unix.Wait4(-1, &e.Status, unix.WNOHANG, &e.Rusage)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if pid <= 0 || err != nil {
			return
		}
		e.Pid = pid
		s.mu.Lock()
		ch, ok := s.waiters[pid]
		delete(s.waiters, pid)
		if pid == s.main {
			s.ended = true
		}
		s.mu.Unlock()
		if ok {
			ch <- e
			continue
		}
		s.orphans.Add(1)
		s.log.Debug("reaped orphan", "pid", pid, "status", e.String())
	}
}

// start starts a process, registered before the loop can see it end.
func (s *Supervisor) start(argv, env []string, files []*os.File, main bool) (int, <-chan ProcessExit, error) {
	ch := make(chan ProcessExit, 1)
	path, err := LookPath(argv[0], env)
	if err != nil {
		return 0, nil, err
	}
	if path != argv[0] {
		s.log.Debug("command found in PATH", "name", argv[0], "path", path)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	p, err := os.StartProcess(path, argv, &os.ProcAttr{Env: env, Files: files})
	if err != nil {
		return 0, nil, err
	}
	pid := p.Pid
	_ = p.Release() // the loop waits for it, not os.Process
	s.waiters[pid] = ch
	if main {
		s.main = pid
		for _, sig := range s.pending {
			if s.passLocked(sig, "passing early signal to the agent") {
				s.arm <- struct{}{} // once: reason is set from here
			}
		}
		s.pending = nil
	}
	return pid, ch, nil
}

// Start starts the main child, which gets the forwarded signals, and
// returns a channel that gets its exit once.
func (s *Supervisor) Start(argv, env []string, files []*os.File) (int, <-chan ProcessExit, error) {
	return s.start(argv, env, files, true)
}

// Reason says why the main child ended: "agent exited", or the signal that
// stopped it.
func (s *Supervisor) Reason() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.reason == "" {
		return "agent exited"
	}
	return s.reason
}

// Run runs a helper command to its end, at most timeout, then SIGKILL.
func (s *Supervisor) Run(argv, env []string, files []*os.File, timeout time.Duration) (ProcessExit, error) {
	pid, done, err := s.start(argv, env, files, false)
	if err != nil {
		return ProcessExit{}, err
	}
	select {
	case e := <-done:
		return e, nil
	case <-time.After(timeout):
		_ = unix.Kill(pid, unix.SIGKILL)
		return <-done, fmt.Errorf("still running after %v: killed", timeout)
	}
}

// Orphans is how many processes not started here were reaped.
func (s *Supervisor) Orphans() uint64 { return s.orphans.Load() }

// Stop stops watching signals and children (a last reaping pass is made);
// later calls do nothing.
func (s *Supervisor) Stop() {
	s.stopOnce.Do(func() {
		signal.Stop(s.sigs)
		signal.Stop(s.stopSigs)
		close(s.done)
		<-s.loopDone
		s.reap()
	})
}

// SetSubreaper makes this process the reaper of its descendants' orphans,
// as PID 1 is, so that no orphan of the agent escapes supervision.
func SetSubreaper() error {
	return unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
}
