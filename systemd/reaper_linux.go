package systemd

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"

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

// Reaper is the one owner of Wait4 in this process, as init (and tini) must
// be: it reaps every child and orphan on SIGCHLD, and hands the statuses of
// processes started through it to their waiters, so none is stolen.
// Nothing else in the process may wait for children (no os/exec Wait).
type Reaper struct {
	log     *slog.Logger
	mu      sync.Mutex
	waiters map[int]chan ProcessExit
	orphans atomic.Uint64
	sigs    chan os.Signal
	done    chan struct{}
}

// NewReaper starts reaping.
func NewReaper(log *slog.Logger) *Reaper {
	r := &Reaper{log: log, waiters: map[int]chan ProcessExit{}, sigs: make(chan os.Signal, 1), done: make(chan struct{})}
	signal.Notify(r.sigs, unix.SIGCHLD)
	go r.loop()
	return r
}

func (r *Reaper) loop() {
	r.reap() // children that ended before SIGCHLD was watched
	for {
		select {
		case <-r.sigs:
			r.reap()
		case <-r.done:
			return
		}
	}
}

// reap collects every child that has ended.
func (r *Reaper) reap() {
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
		r.mu.Lock()
		ch, ok := r.waiters[pid]
		delete(r.waiters, pid)
		r.mu.Unlock()
		if ok {
			ch <- e
			continue
		}
		r.orphans.Add(1)
		r.log.Debug("reaped orphan", "pid", pid, "status", e.String())
	}
}

// Start starts a process and returns a channel that gets its exit. The
// process is registered before the reaper can see it end.
func (r *Reaper) Start(argv []string, env []string, files []*os.File) (int, <-chan ProcessExit, error) {
	ch := make(chan ProcessExit, 1)
	r.mu.Lock()
	defer r.mu.Unlock()
	p, err := os.StartProcess(argv[0], argv, &os.ProcAttr{Env: env, Files: files})
	if err != nil {
		return 0, nil, err
	}
	pid := p.Pid
	_ = p.Release() // the reaper waits for it, not os.Process
	r.waiters[pid] = ch
	return pid, ch, nil
}

// Orphans is how many processes not started through Start were reaped.
func (r *Reaper) Orphans() uint64 { return r.orphans.Load() }

// Stop stops reaping (a last pass is made first).
func (r *Reaper) Stop() {
	signal.Stop(r.sigs)
	close(r.done)
	r.reap()
}

// SetSubreaper makes this process the reaper of its descendants' orphans,
// as PID 1 is, so that no orphan of the agent escapes supervision.
func SetSubreaper() error {
	return unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
}
