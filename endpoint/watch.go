package endpoint

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"

	"github.com/fsnotify/fsnotify"
)

// IsPattern reports whether a unix address names sockets by a pattern: a
// glob (*, ?, [) in its directory part, one socket per matching directory.
func (a Addr) IsPattern() bool {
	return a.Scheme == SchemeUnix && strings.ContainsAny(filepath.Dir(a.Path), "*?[")
}

// CheckPattern reports what is wrong with a unix address as a watched
// pattern: the glob must be well formed and stand in directories only (the
// socket's own name is the one the relay creates).
func (a Addr) CheckPattern() error {
	dir, name := filepath.Split(a.Path)
	if strings.ContainsAny(name, "*?[") {
		return addrErr(a.String(), a.Scheme, "a pattern may match directories, not the socket's name: the relay creates %q in each", name)
	}
	if _, err := filepath.Match(dir, ""); err != nil {
		return addrErr(a.String(), a.Scheme, "bad pattern: %v", err)
	}
	return nil
}

// Watch keeps a unix listener at every path that matches pattern (see
// CheckPattern) whose VM is there: it is created when the VM appears and
// closed when it goes. A VM is there when, for a pattern with a glob and
// a hybrid-vsock name (PATH_PORT), the VMM's own socket PATH is (Kata
// makes the directories before the VMM, and other things match the glob:
// a socket made in every matching directory would be a stray one); for a
// name without "_PORT" (someone's own naming) or a plain path (a VM's
// directory not made yet), when its directory is. fsnotify watches each
// directory on the way, the VM directories too (the VMM's socket comes
// and goes there); when the pattern's fixed part does not exist yet, its
// nearest existing ancestor is watched until it does.
type Watch struct {
	pattern string
	// vmm is the name of the VMM's socket a listener waits for, or "".
	vmm    string
	log    *slog.Logger
	listen func(Addr) (net.Listener, error)
	add    func(ln net.Listener, path string)
	w      *fsnotify.Watcher
	done   chan struct{}

	mu      sync.Mutex
	watched map[string]bool
	lns     map[string]*watchedListener // by socket path
	// failed are the sockets that could not be made, and the directories
	// that could not be watched, said once each (every event rescans)
	// until made or gone.
	failed map[string]bool
	closed bool
}

// WatchPattern starts watching. listen makes each listener (nil: Listen;
// a caller's may take one a previous process kept). add is called with
// every listener it creates: for the directories there already, before
// WatchPattern returns (on the caller's goroutine); for those that appear
// later, from the watcher's goroutine. Closing a listener is the Watch's
// job (when its directory goes, or at Close).
func WatchPattern(pattern string, log *slog.Logger, listen func(Addr) (net.Listener, error), add func(ln net.Listener, path string)) (*Watch, error) {
	fw, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, fmt.Errorf("watch %s: %w", pattern, err)
	}
	if listen == nil {
		listen = Listen
	}
	w := &Watch{pattern: pattern, log: log, listen: listen, add: add, w: fw, done: make(chan struct{}),
		watched: map[string]bool{}, lns: map[string]*watchedListener{}, failed: map[string]bool{}}
	if (Addr{Scheme: SchemeUnix, Path: pattern}).IsPattern() {
		if vmm := VMMSocket(pattern); vmm != "" {
			w.vmm = filepath.Base(vmm)
		}
	}
	w.rescan()
	go w.loop()
	return w, nil
}

func (w *Watch) loop() {
	defer close(w.done)
	for {
		select {
		case ev, ok := <-w.w.Events:
			if !ok {
				return
			}
			if ev.Has(fsnotify.Create) || ev.Has(fsnotify.Remove) || ev.Has(fsnotify.Rename) {
				w.rescan()
			}
		case err, ok := <-w.w.Errors:
			if !ok {
				return
			}
			// An overflowed event queue loses events: a full rescan
			// finds what they were about.
			w.log.Warn("watching VM directories: "+err.Error()+"; rescanning", "pattern", w.pattern)
			w.rescan()
		}
	}
}

// rescan brings watches and listeners in line with the file system: until
// nothing changes, as directories may appear while watches are added.
func (w *Watch) rescan() { w.rescanFor(false) }

// rescanFor is rescan; recheck also makes listeners again whose socket
// was removed (not on every event: a VM's directory being removed takes
// its socket first).
func (w *Watch) rescanFor(recheck bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for range 10 {
		if w.closed || !w.sync(recheck) {
			return
		}
	}
}

// sync makes one pass and reports whether it changed anything.
func (w *Watch) sync(recheck bool) (changed bool) {
	dir, name := filepath.Split(w.pattern)
	dir = filepath.Clean(dir)
	parts := strings.Split(strings.TrimPrefix(dir, "/"), "/")
	want := map[string]bool{}
	// Every existing directory that a prefix of the pattern matches is
	// watched, so that the next level is seen when it appears.
	prefix := "/"
	for i := 0; i <= len(parts); i++ {
		matches, _ := filepath.Glob(prefix)
		for _, m := range matches {
			if fi, err := os.Stat(m); err == nil && fi.IsDir() {
				want[m] = true
			}
		}
		if i == len(parts) {
			break
		}
		prefix = filepath.Join(prefix, parts[i])
	}
	if len(want) == 0 {
		return false
	}
	for d := range want {
		if !w.watched[d] {
			if err := w.w.Add(d); err != nil {
				if !w.failed[d] {
					w.failed[d] = true
					w.log.Warn("cannot watch a directory", withHint([]any{"dir", d, "err", err}, err)...)
				}
				continue
			}
			delete(w.failed, d)
			w.watched[d] = true
			changed = true
		}
	}
	for d := range w.watched {
		if !want[d] {
			_ = w.w.Remove(d) // gone already, mostly
			delete(w.watched, d)
		}
	}
	// A listener in every directory the whole pattern matches.
	full, _ := filepath.Glob(dir)
	live := map[string]bool{}
	for _, d := range full {
		if fi, err := os.Stat(d); err != nil || !fi.IsDir() {
			continue
		}
		if w.vmm != "" && !vmmThere(filepath.Join(d, w.vmm)) {
			continue // no VM here (yet, or any more)
		}
		path := filepath.Join(d, name)
		live[path] = true
		if ln := w.lns[path]; ln != nil {
			if !recheck {
				continue
			}
			if fi, err := os.Lstat(path); err == nil && fi.Mode().Type() == os.ModeSocket {
				continue
			}
			// Someone removed the socket: nobody can connect to it.
			n := ln.retire()
			delete(w.lns, path)
			w.log.Warn("a VM's socket was removed; creating it again", "from", "unix://"+path, "accepted_from_backlog", n)
		}
		ln, err := w.listen(Addr{Scheme: SchemeUnix, Path: path})
		if err != nil {
			if !w.failed[path] {
				w.failed[path] = true
				w.log.Error("VM found, but its socket cannot be created: no agent of it can connect", withHint([]any{"path", path, "err", err}, err)...)
			}
			continue
		}
		delete(w.failed, path)
		wl := &watchedListener{Listener: ln}
		w.lns[path] = wl
		w.log.Info("VM found; listening", "from", "unix://"+path)
		w.add(wl, path)
		changed = true
	}
	for path := range w.failed {
		if !live[path] && !want[path] {
			delete(w.failed, path)
		}
	}
	for path, ln := range w.lns {
		if !live[path] {
			n := ln.retire()
			delete(w.lns, path)
			w.log.Info("VM gone; its listener closed", "from", "unix://"+path, "accepted_from_backlog", n)
		}
	}
	return changed
}

// Rescan looks at the file system again, as if told of a change:
// listeners for directories that appeared, closed for those gone, made
// again where their socket was removed.
func (w *Watch) Rescan() { w.rescanFor(true) }

// Missing is, while no listener is kept, the first part of the pattern
// that matches no directory ("/run/vc/firecraker" of a misspelt
// pattern), else the VMM's socket the listeners wait for when no
// directory has one ("/run/vc/vm/*/clh.sock": no VM running), or "".
func (w *Watch) Missing() string {
	dir := filepath.Clean(filepath.Dir(w.pattern))
	prefix := "/"
	for _, part := range strings.Split(strings.TrimPrefix(dir, "/"), "/") {
		prefix = filepath.Join(prefix, part)
		matches, _ := filepath.Glob(prefix)
		if !slices.ContainsFunc(matches, isDir) {
			return prefix
		}
	}
	if w.vmm != "" {
		vmm := filepath.Join(dir, w.vmm)
		if matches, _ := filepath.Glob(vmm); len(matches) == 0 {
			return vmm
		}
	}
	return ""
}

// MissingHint says why Missing's part m matches nothing: a directory this
// process may not read (AccessHint), or, most often, nothing there yet.
func MissingHint(m string) string {
	var err error
	dir, base := filepath.Split(m)
	switch {
	case strings.ContainsAny(base, "*?["):
		_, err = os.ReadDir(filepath.Dir(m)) // a glob reads its directory
	case strings.ContainsAny(dir, "*?["):
		// A VMM's socket in the VM directories: one this process may not
		// look into is why none is found.
		dirs, _ := filepath.Glob(filepath.Clean(dir))
		for _, d := range dirs {
			if _, e := os.Lstat(filepath.Join(d, base)); errors.Is(e, fs.ErrPermission) {
				err = e
				break
			}
		}
	default:
		_, err = os.Lstat(m)
	}
	if h := AccessHint(err); h != "" {
		return h
	}
	return "a misspelt path, or no VM started yet"
}

// AccessHint is what to change when err is Kata's directories refusing
// this process, or "" for any other error.
func AccessHint(err error) string {
	switch {
	case errors.Is(err, syscall.EACCES), errors.Is(err, syscall.EPERM):
		return "Kata makes each VM's directory root's, mode 0750: run as root (the shipped units do, with no capability)"
	case errors.Is(err, syscall.EROFS):
		return "read-only to this process: give a sandboxed unit the tree in ReadWritePaths= (the shipped units have -/run/vc -/run/kata), existing when it starts"
	}
	return ""
}

// withHint is attrs with err's AccessHint, when it has one.
func withHint(attrs []any, err error) []any {
	if h := AccessHint(err); h != "" {
		return append(attrs, "hint", h)
	}
	return attrs
}

func isDir(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.IsDir()
}

// vmmThere reports whether a VMM's socket is at path, or may be: in a
// directory this process may not look into (Kata's are root's, 0750) it
// cannot tell, and tries, so that the listener's error says why. Its
// type is not checked: a socket a dead VMM left is as much a VM's as a
// live one's, until Kata removes the directory.
func vmmThere(path string) bool {
	_, err := os.Lstat(path)
	return err == nil || errors.Is(err, fs.ErrPermission)
}

// Listening is how many listeners the Watch keeps now.
func (w *Watch) Listening() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.lns)
}

// Close stops watching and closes every listener.
func (w *Watch) Close() error {
	w.mu.Lock()
	w.closed = true
	var errs []error
	for path, ln := range w.lns {
		if err := ln.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			errs = append(errs, err)
		}
		delete(w.lns, path)
	}
	w.mu.Unlock()
	errs = append(errs, w.w.Close())
	<-w.done
	return errors.Join(errs...)
}

// watchedListener is a listener the Watch made. When its VM goes, the
// connections still in its backlog are accepted before it closes (an
// agent's last spans, sent as its VM stopped) and given to the next
// Accepts: nobody can connect to it any more, so none come after them.
type watchedListener struct {
	net.Listener
	mu   sync.Mutex
	left []net.Conn
}

func (l *watchedListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		return c, nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.left) > 0 {
		c, l.left = l.left[0], l.left[1:]
		return c, nil
	}
	return nil, err
}

// retire closes l for good, its backlog taken first; it returns how
// many connections that was.
func (l *watchedListener) retire() int {
	left := acceptBacklog(l.Listener)
	l.mu.Lock()
	l.left = append(l.left, left...)
	l.mu.Unlock()
	_ = l.Listener.Close()
	return len(left)
}
