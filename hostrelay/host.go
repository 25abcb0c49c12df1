package hostrelay

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/katatrace/katatrace/endpoint"
	"github.com/katatrace/katatrace/sink"
)

// HostConfig is a host relay from its start to its stop: a listener on
// every From (or a watch, for a pattern), one Server behind them, and the
// sink, which the host owns from NewHost on and closes at its stop. The
// roles fill it from their flags; a simulation injects its listeners.
type HostConfig struct {
	Server ServerConfig
	From   []endpoint.Addr
	// To names the sink in the log.
	To string
	// DrainTimeout bounds the stop (default 5 s).
	DrainTimeout time.Duration
	// Listen makes a From's listener, and a watched pattern's sockets
	// (nil: endpoint.Listen). The roles' keeps each in the file
	// descriptor store.
	Listen func(endpoint.Addr) (net.Listener, error)
	// Watch keeps a listener at every path matching a pattern, calling add
	// with each it makes (nil: endpoint.WatchPattern). Watched says which
	// From is served so (nil: a pattern, or a unix socket whose directory
	// does not exist yet, as a VM that has not started must not stop the
	// relay; a simulation's in-memory addresses need their own).
	Watch   func(pattern string, log *slog.Logger, listen func(endpoint.Addr) (net.Listener, error), add func(ln net.Listener, path string)) (Watcher, error)
	Watched func(endpoint.Addr) bool
	// Successor, when set, is asked at the stop who takes what the host
	// holds (the next process, through a store); nil, or nil from it: the
	// stop drains and closes.
	Successor func() Successor
	// Adopt, when set, takes up what a predecessor left, before the host
	// listens.
	Adopt func(*Server)
	// Listened is called once every From listens.
	Listened func()
	// Ready is called once the host serves, Stopping as its stop begins,
	// and Status with a line saying what listens, as it changes: the
	// service manager's (systemd's READY=1, STOPPING=1, STATUS=). Each
	// may be nil.
	Ready, Stopping func()
	Status          func(string)
	// Attrs are the host's counters for the stop's log line (nil: none).
	Attrs  func() []any
	Logger *slog.Logger
}

// Watcher is a watched pattern's listeners (endpoint.Watch).
type Watcher interface {
	Listening() int
	// Missing is the first part of the pattern that matches nothing, or "".
	Missing() string
	Rescan()
	Close() error
}

// Successor takes what a stopping host holds (roles: the file descriptor
// store, for the unit's next process).
type Successor interface {
	// HandingOver is told as the handover begins, before the listeners
	// close: they stay where they are, for the successor.
	HandingOver()
	// Keep stores the server's state and what the sink had not delivered
	// (nil for a sink that holds nothing); an error says it could not.
	Keep(st State, held []sink.HeldBatch) error
}

// ListenError is a From the host could not listen on (or watch).
type ListenError struct {
	Addr  endpoint.Addr
	Watch bool
	Err   error
}

func (e *ListenError) Error() string {
	if e.Watch {
		return fmt.Sprintf("watch %s: %v", e.Addr, e.Err)
	}
	return fmt.Sprintf("listen on %s: %v", e.Addr, e.Err)
}

func (e *ListenError) Unwrap() error { return e.Err }

// Host is a host relay's life: NewHost, then Run until its context ends,
// then the stop. Both host roles and the simulation drive it.
type Host struct {
	cfg HostConfig
	srv *Server
	log *slog.Logger
	ls  listenerSet

	mu        sync.Mutex
	lns       []net.Listener
	watches   []Watcher
	stopOnce  sync.Once
	adoptOnce sync.Once
}

// NewHost makes the host's Server; nothing listens until Run.
func NewHost(cfg HostConfig) *Host {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	cfg.Server.Logger = cmpOr(cfg.Server.Logger, cfg.Logger)
	if cfg.DrainTimeout <= 0 {
		cfg.DrainTimeout = 5 * time.Second
	}
	if cfg.Listen == nil {
		cfg.Listen = endpoint.Listen
	}
	if cfg.Watched == nil {
		cfg.Watched = watched
	}
	if cfg.Watch == nil {
		cfg.Watch = func(pattern string, log *slog.Logger, listen func(endpoint.Addr) (net.Listener, error), add func(net.Listener, string)) (Watcher, error) {
			return endpoint.WatchPattern(pattern, log, listen, add)
		}
	}
	return &Host{cfg: cfg, srv: NewServer(cfg.Server), log: cfg.Logger}
}

func cmpOr(l, def *slog.Logger) *slog.Logger {
	if l != nil {
		return l
	}
	return def
}

// Server is the host's Server (for its metrics and stats).
func (h *Host) Server() *Server { return h.srv }

// Ready says why the host is not ready (/readyz): no socket listening,
// or a sink whose endpoint is known to be unreachable; nil when it is.
func (h *Host) Ready() error { return h.ls.ready(h.cfg.Server.Sink) }

// Listening is the number of sockets listening, per From.
func (h *Host) Listening() map[string]int { return h.ls.counts() }

// Reload is a SIGHUP: watched patterns scanned again, and a sink that can
// reopen its output reopened. It returns what it did, for the log.
func (h *Host) Reload() []any {
	h.mu.Lock()
	watches := h.watches
	h.mu.Unlock()
	for _, w := range watches {
		w.Rescan()
	}
	attrs := []any{"listening", h.ls.total()}
	if r, ok := sink.Inner(h.cfg.Server.Sink).(sink.Reopener); ok {
		if err := r.Reopen(); err != nil {
			return append(attrs, "sink", h.cfg.To, "sink_reopen_err", err)
		}
		attrs = append(attrs, "sink", h.cfg.To+" reopened")
	}
	return attrs
}

// Run takes up what a predecessor left, listens on every From, serves
// until ctx ends or a listener fails, and stops (Stop). It returns the
// failure: a *ListenError for a From it could not listen on, or the
// listener's that failed; nil after ctx ended.
func (h *Host) Run(ctx context.Context) error {
	h.adopt()
	var lns []net.Listener
	var lnFroms []string
	for _, a := range h.cfg.From {
		if h.cfg.Watched(a) {
			// VMs come and go: a listener per VM directory, as it appears.
			w, err := h.cfg.Watch(a.Path, h.log, h.cfg.Listen, func(ln net.Listener, path string) {
				go func() {
					if err := h.srv.Serve(ln, "unix://"+path); err != nil && !errors.Is(err, net.ErrClosed) {
						h.log.Warn("a VM's listener failed; the others go on", "from", "unix://"+path, "err", err)
					}
				}()
			})
			if err != nil {
				return h.fail(&ListenError{Addr: a, Watch: true, Err: err})
			}
			h.log.Info("watching for VMs", "from", a.String(), "to", h.cfg.To, "listening", w.Listening())
			h.mu.Lock()
			h.watches = append(h.watches, w)
			h.mu.Unlock()
			h.ls.add(a.String(), w.Listening, w.Missing)
			continue
		}
		ln, err := h.cfg.Listen(a)
		if why, hint := vsockUnavailable(a, err); why != "" && slices.ContainsFunc(h.cfg.From, func(f endpoint.Addr) bool { return f.Scheme != endpoint.SchemeVsock }) {
			// A kernel without vsock, or a sandbox refusing it (a
			// container's default seccomp profile), is the host's, not a
			// slip of the operator's, and hybrid vsock needs no vsock
			// socket: the other --from serve (one unit, or one image, for
			// every hypervisor), and this one is said, and counted, as
			// listening on nothing (KatatraceFromNotListening).
			h.log.Error(why+": no vhost-vsock guest (QEMU) can connect; the other --from serve", "from", a.String(), "err", err, "hint", hint)
			h.ls.add(a.String(), func() int { return 0 }, nil)
			continue
		}
		if err != nil {
			return h.fail(&ListenError{Addr: a, Err: err})
		}
		h.mu.Lock()
		h.lns = append(h.lns, ln)
		h.mu.Unlock()
		lns = append(lns, ln)
		lnFroms = append(lnFroms, a.String())
	}
	if h.cfg.Listened != nil {
		h.cfg.Listened()
	}
	failed := make(chan error, len(lns))
	for i, ln := range lns {
		h.log.Info("listening", "from", lnFroms[i], "to", h.cfg.To)
		var up atomic.Int64
		up.Store(1)
		h.ls.add(lnFroms[i], func() int { return int(up.Load()) }, nil)
		go func() { failed <- h.srv.Serve(ln, lnFroms[i]); up.Store(0) }()
	}
	if h.cfg.Ready != nil {
		h.cfg.Ready()
	}
	h.log.Info("ready", "to", h.cfg.To)
	stopMonitor := h.ls.monitor(h.log, h.cfg.Status)
	defer stopMonitor()
	var err error
	select {
	case <-ctx.Done():
	case err = <-failed:
		h.log.Error("a listener failed; shutting down", "err", err)
	}
	h.Stop()
	return err
}

// fail stops a host that could not start, and returns err.
func (h *Host) fail(err error) error {
	h.Stop()
	return err
}

// Stop ends the host, however it ends (a signal, a failure at start),
// once, within DrainTimeout in all: with a Successor everything is handed
// to it (a restart loses nothing); without, what was waiting on each
// connection is read and handed on, and the sink is closed. Reading gets
// at most half of the bound, the sink the rest (stopShares). Later calls
// do nothing.
func (h *Host) Stop() {
	h.adopt()
	h.stopOnce.Do(h.stop)
}

func (h *Host) stop() {
	if h.cfg.Stopping != nil {
		h.cfg.Stopping()
	}
	sh := stopShares(time.Now(), h.cfg.DrainTimeout)
	ctx, cancel := context.WithDeadline(context.Background(), sh.end)
	defer cancel()
	readCtx, cancelRead := context.WithDeadline(ctx, sh.read)
	defer cancelRead()
	sinkCtx, cancelSink := context.WithDeadline(ctx, sh.sink)
	defer cancelSink()
	attrs := func() []any {
		if h.cfg.Attrs == nil {
			return nil
		}
		return h.cfg.Attrs()
	}
	var err error
	var succ Successor
	if h.cfg.Successor != nil {
		succ = h.cfg.Successor()
	}
	if succ != nil {
		succ.HandingOver()
		if err = h.handOver(readCtx, sinkCtx, succ); err != nil {
			h.log.Warn("handover incomplete", append([]any{"err", err}, attrs()...)...)
		}
	} else if err = h.srv.Shutdown(readCtx); err != nil {
		h.log.Warn("drain incomplete", append([]any{"err", err}, attrs()...)...)
	}
	h.mu.Lock()
	lns, watches := h.lns, h.watches
	h.mu.Unlock()
	// Closed again after the server's stop (no harm): the watches' own.
	for _, l := range lns {
		_ = l.Close()
	}
	for _, w := range watches {
		_ = w.Close()
	}
	h.closeSink(sinkCtx, ctx)
	if err == nil {
		h.log.Info("stopped", attrs()...)
	}
}

// handOver stops the server (within readCtx) and the sink (sinkCtx) for
// the successor: the connections stay open in its store, and their state
// and what the sink held go to it.
func (h *Host) handOver(readCtx, sinkCtx context.Context, succ Successor) error {
	st, err := h.srv.Handover(readCtx)
	var held []sink.HeldBatch
	if hs, ok := sink.Inner(h.cfg.Server.Sink).(sink.Handing); ok {
		held = hs.Handover(sinkCtx)
	}
	if kerr := succ.Keep(st, held); kerr != nil {
		return errors.Join(err, kerr)
	}
	return err
}

// adopt takes up what a predecessor left, once: at Run, or at a stop
// that came first (a failure at start must hand on what the predecessor
// left, not an empty state over it).
func (h *Host) adopt() {
	h.adoptOnce.Do(func() {
		if h.cfg.Adopt != nil {
			h.cfg.Adopt(h.srv)
		}
	})
}

// closeSink flushes and closes the sink, once: its endpoint has until
// sinkCtx ends to take what the sink holds, and the sink until ctx ends
// to say what it lost. A sink stuck in a write (a pipe nobody reads) must
// not keep the process.
func (h *Host) closeSink(sinkCtx, ctx context.Context) {
	closeSink(sinkCtx, ctx, h.cfg.Server.Sink, h.cfg.To, h.log)
}

// closeSink closes out, its endpoint given until sinkCtx ends, and
// waits for it until ctx ends, saying so when it could not.
func closeSink(sinkCtx, ctx context.Context, out sink.Sink, to string, log *slog.Logger) {
	done := make(chan error, 1)
	go func() { done <- out.Close(sinkCtx) }()
	select {
	case err := <-done:
		if err != nil {
			log.Warn("sink not closed cleanly", "to", to, "err", err)
		}
	case <-ctx.Done():
		log.Error("sink still not closed when the drain timeout ended; what it holds is lost", "to", to)
	}
}

// CloseSink closes a sink that no Host took (a role that failed before
// making one), within d.
func CloseSink(out sink.Sink, to string, d time.Duration, log *slog.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	closeSink(ctx, ctx, out, to, log)
}

// vsockUnavailable says why a's listener could not be made, with what
// to do, when the cause is this host's or this process's sandbox, not the
// address: this kernel offers no vsock at all, or the making of vsock
// sockets was refused; why is "" for any other failure (nil included).
func vsockUnavailable(a endpoint.Addr, err error) (why, hint string) {
	switch {
	case a.Scheme != endpoint.SchemeVsock || err == nil:
	case errors.Is(err, syscall.EAFNOSUPPORT), errors.Is(err, syscall.ENODEV):
		return "this kernel has no vsock", "load vhost_vsock (it brings vsock) and restart, or leave this --from out"
	case endpoint.VsockRefused(a, err) != "":
		return "vsock sockets refused", endpoint.VsockRefused(a, err)
	}
	return "", ""
}

// watched reports whether a From is served by watching the file system:
// a pattern, or a unix socket whose directory does not exist yet (a VM
// that has not started must not stop the relay for the others).
func watched(a endpoint.Addr) bool {
	if a.IsPattern() {
		return true
	}
	if a.Scheme != endpoint.SchemeUnix || strings.HasPrefix(a.Path, "@") {
		return false
	}
	_, err := os.Stat(filepath.Dir(a.Path))
	return errors.Is(err, os.ErrNotExist)
}
