package roles

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/katatrace/katatrace/fdstore"
	"github.com/katatrace/katatrace/handover"
	"golang.org/x/sys/unix"
)

// handing is a host role's side of --handover-socket: the store it keeps
// its sockets in, what it took from a predecessor (until it serves it),
// the offer waiting at the socket for a successor once the host serves,
// and what the stop does: hand over if a successor asked for the stop,
// keep everything in place if what was taken is not served yet (the
// predecessor still holds it, for the next successor), else drain.
type handing struct {
	store *handover.Store // nil: no --handover-socket
	// resumeAfter is how long, after a successor went away without
	// serving, this process waits for another before it serves again.
	resumeAfter time.Duration
	taken       *handover.Taken // nil: nothing taken, or committed

	mu     sync.Mutex
	err    error // why it did not start
	o      *handover.Offer
	state  atomic.Int32 // serving, asked or draining
	serves atomic.Bool  // the host is up, and this process holds what it serves
	given  atomic.Bool  // a successor serves everything now
}

const (
	serving  int32 = iota
	asked          // a successor waits: the stop hands over
	draining       // the stop began without one: it drains
)

var (
	// errSuccessor ends a host's run for a successor.
	errSuccessor = errors.New("a successor takes over")
	// errStopping refuses a successor that asks as this process stops.
	errStopping = errors.New("this process is stopping without a successor: start afresh once it is gone")
)

// ready is the host serving: what was taken is served from now on (the
// predecessor lets its copies go), and a successor may ask at path (stop
// ends the host for it).
func (h *handing) ready(rc *RunContext, path string, stop context.CancelCauseFunc) {
	if rc.Ctx.Err() != nil {
		return // stopping before it serves: what it took goes back
	}
	o, err := handover.NewOffer(path, rc.Role, rc.Log, func() error {
		if rc.Ctx.Err() != nil {
			return errStopping
		}
		if h.state.CompareAndSwap(serving, asked) {
			rc.Log.Info("handing over to the successor at the handover socket", "path", path)
			stop(errSuccessor)
		}
		if h.state.Load() == draining {
			return errStopping
		}
		return nil
	})
	if err != nil {
		// Not started: a process no successor can take over from would
		// end every guest's connection at its stop. What it took goes
		// back.
		h.mu.Lock()
		h.err = fmt.Errorf("--handover-socket %s: cannot wait there for a successor: %w", path, err)
		h.mu.Unlock()
		stop(h.err)
		return
	}
	h.mu.Lock()
	h.o = o
	t := h.taken
	h.taken = nil
	h.mu.Unlock()
	if t != nil {
		if err := t.Commit(); err != nil {
			rc.Log.Warn("the predecessor did not hear that this process serves what it took (it is gone): this one serves it alone", "err", err)
		}
	}
	if err := o.Publish(); err != nil {
		rc.Log.Error("cannot wait at the handover socket: no next process can take over from this one, and this one's stop ends every guest's connection", "path", path, "err", err)
	}
	h.serves.Store(true)
}

// hold keeps a copy of each of files (a predecessor's, or this process's
// own before it executed itself anew) in a new store, and sorts them
// for the host (each file closed there).
func (h *handing) hold(rc *RunContext, files map[string]*os.File) predecessor {
	h.store = handover.NewStore()
	for name, f := range files {
		if err := h.store.KeepFile(name, f); err != nil {
			rc.Log.Warn("a handed socket could not be kept for a next process", "name", name, "err", err)
		}
	}
	return readPredecessor(rc, files, h.store)
}

// readiness is /readyz under --handover-socket: whether this process
// holds the node's guests. A DaemonSet's controller deletes an old pod
// that is not ready at once, new pod ready or not: so neither the sink's
// endpoint nor a --from without a socket may make it unready (the
// alerts say those), and it stays ready until a successor serves what
// it gave.
func (h *handing) readiness() error {
	switch {
	case h.given.Load():
		return errors.New("handed over to the process at the handover socket: serving nothing")
	case !h.serves.Load():
		return errors.New("not serving: starting, or stopping")
	}
	return nil
}

// successor decides, as the stop (ctx's end) begins, whether it hands
// over: to a successor that asked for this stop, or back where it came
// from when what was taken is not served yet.
func (h *handing) successor(ctx context.Context) bool {
	if h.state.CompareAndSwap(serving, draining) || context.Cause(ctx) != errSuccessor {
		h.state.Store(draining)
		h.serves.Store(false)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.state.Load() == asked || h.taken != nil
}

// finish ends the handover side once the host stopped: a successor that
// asked gets everything (or the next that asks, until this process is
// stopped), and then this process waits for its stop, serving nothing:
// exiting on its own, it would be restarted beside its successor.
func (h *handing) finish(rc *RunContext) {
	defer h.store.Close()
	h.mu.Lock()
	o, t := h.o, h.taken
	h.mu.Unlock()
	if t != nil {
		// Never served: the predecessor keeps it all for the next.
		rc.Log.Warn("stopped before serving what it took: the process at the handover socket keeps it for the next that asks")
		t.Abandon()
	}
	if o == nil {
		return
	}
	defer o.Close()
	if h.state.Load() != asked {
		return
	}
	err := o.Give(rc.Ctx, h.store, func() { forgetStreams(rc, h.store) }, h.resumeAfter)
	if errors.Is(err, handover.ErrNoSuccessor) && rc.Ctx.Err() == nil {
		_ = o.Close()
		err = h.resume(rc) // returns only on failure
	}
	if err != nil {
		rc.Log.Error("stopped before a successor took what this process kept: every guest's connection it held ends",
			"err", err, "descriptors", h.store.Len())
		return
	}
	h.given.Store(true)
	_ = h.store.Close() // the successor holds its own copies
	_ = o.Close()
	rc.Log.Info("handed over: this process serves nothing now (/readyz answers 503) and waits to be stopped")
	<-rc.Ctx.Done()
}

// forgetStreams rewrites the state in the store without what it says of
// each connection: a successor had everything and went away without
// serving it, having perhaps read from the streams, so the next takes
// each up where it is, as after a crash (a span stream finds its next
// frame; a relay-protocol connection is closed, and its v2 guest sends
// again). The sessions' marks and the sink's batches stay.
func forgetStreams(rc *RunContext, store *handover.Store) {
	f := store.File(fdstore.StateName)
	if f == nil {
		return
	}
	b, err := fdstore.ReadState(f, maxHandover)
	var st handoverState
	if err == nil {
		err = json.Unmarshal(b, &st)
	}
	if err == nil {
		st.Server.Conns = nil
		_, err = keepState(store, st)
	}
	if err != nil {
		rc.Log.Warn("the state for the next successor could not be rewritten: it is dropped, and the next takes every connection up as after a crash", "err", err)
		_ = store.Forget(fdstore.StateName)
		return
	}
	rc.Log.Info("a successor went away with everything: the next takes each stream up where it is, as after a crash")
}

// Environment of a process that serves again what it kept: its own
// sockets, by descriptor, after an exec of itself (resume).
const (
	envKeptFDs = "KATATRACE_KEPT_FDS" // {"FD":"name",...}
	envKeptPID = "KATATRACE_KEPT_PID" // the process's pid: a child's inherit none
)

// resume serves again what this process kept for a successor that never
// served it: it executes itself anew, its store's sockets left open for
// the new image (kept), which takes them up as from a predecessor. The
// pid stays, so the container goes on. It returns only on failure.
func (h *handing) resume(rc *RunContext) error {
	names, files := h.store.Snapshot()
	fds := map[string]string{}
	for i, f := range files {
		rc, err := f.SyscallConn()
		if err != nil {
			return err
		}
		var ferr error
		if err := rc.Control(func(fd uintptr) {
			fds[strconv.Itoa(int(fd))] = names[i]
			_, ferr = unix.FcntlInt(fd, unix.F_SETFD, 0) // not close-on-exec
		}); err != nil {
			return err
		}
		if ferr != nil {
			return ferr
		}
	}
	b, err := json.Marshal(fds)
	if err != nil {
		return err
	}
	env := slices.DeleteFunc(os.Environ(), func(e string) bool {
		return strings.HasPrefix(e, envKeptFDs+"=") || strings.HasPrefix(e, envKeptPID+"=")
	})
	env = append(env, envKeptFDs+"="+string(b), envKeptPID+"="+strconv.Itoa(os.Getpid()))
	if err := context.Cause(rc.Ctx); err != nil {
		return err // stopped meanwhile
	}
	rc.Log.Info("serving again what this process kept: executing itself anew", "descriptors", len(fds))
	err = syscall.Exec("/proc/self/exe", os.Args, env)
	for fd := range fds {
		n, _ := strconv.Atoi(fd)
		_, _ = unix.FcntlInt(uintptr(n), unix.F_SETFD, unix.FD_CLOEXEC)
	}
	return fmt.Errorf("executing itself anew: %w", err)
}

// startErr is why the host did not start, if for the handover socket.
func (h *handing) startErr() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.err
}

// kept is what a process that executed itself anew (resume) left itself,
// by name; nil when it did not. Each descriptor is checked to be open,
// and close-on-exec again.
func kept() (map[string]*os.File, error) {
	v, pid := os.Getenv(envKeptFDs), os.Getenv(envKeptPID)
	os.Unsetenv(envKeptFDs)
	os.Unsetenv(envKeptPID)
	if v == "" || pid != strconv.Itoa(os.Getpid()) {
		return nil, nil
	}
	var fds map[string]string
	if err := json.Unmarshal([]byte(v), &fds); err != nil {
		return nil, fmt.Errorf("$%s: %w", envKeptFDs, err)
	}
	files := map[string]*os.File{}
	for s, name := range fds {
		fd, err := strconv.Atoi(s)
		switch {
		case err != nil || strconv.Itoa(fd) != s || fd < 3:
			err = errors.New("not a kept socket's number")
		case files[name] != nil:
			err = errors.New("a name given twice")
		default:
			err = fdstore.CheckName(name)
		}
		if err == nil {
			_, err = unix.FcntlInt(uintptr(fd), unix.F_SETFD, unix.FD_CLOEXEC)
		}
		if err != nil {
			for _, f := range files {
				_ = f.Close()
			}
			return nil, fmt.Errorf("$%s: descriptor %q (%s): %w", envKeptFDs, s, name, err)
		}
		files[name] = os.NewFile(uintptr(fd), name)
	}
	return files, nil
}
