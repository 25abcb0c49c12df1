package roles

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/katatrace/katatrace/endpoint"
	"github.com/katatrace/katatrace/fdstore"
	"github.com/katatrace/katatrace/guestid"
	"github.com/katatrace/katatrace/handover"
	"github.com/katatrace/katatrace/hostrelay"
	"github.com/katatrace/katatrace/sink"
)

// handoverState is what a host role that stops cleanly hands the next
// process of its unit, in a memfd in the file descriptor store: how to
// take up each connection it kept there, and what its sink had not
// delivered.
type handoverState struct {
	Version int             `json:"version"`
	Role    string          `json:"role"`
	Server  hostrelay.State `json:"server"`
	// Sink is the --to the held batches are encoded for.
	Sink string           `json:"sink"`
	Held []sink.HeldBatch `json:"held,omitempty"`
}

const (
	handoverVersion = 1
	// maxHandover bounds the state read back: the sink's queue, and what
	// each connection had read of its next frame.
	maxHandover = 1 << 31
)

// keeper is where a host role keeps its sockets for the next process:
// the unit's file descriptor store under systemd (*fdstore.Store), or
// the process's own, handed over a unix socket (*handover.Store).
type keeper interface {
	hostrelay.Store
	KeepFile(name string, f *os.File) error
	Len() int
	Max() int // 0: no limit of its own
}

// forget takes name out of store, or, where this process keeps none,
// out of the unit's (a predecessor's, left there).
func forget(store keeper, name string) {
	if store == nil {
		_ = fdstore.Remove(name)
		return
	}
	_ = store.Forget(name)
}

// size says how full store is, for the log.
func size(store keeper) string {
	if store.Max() == 0 {
		return strconv.Itoa(store.Len())
	}
	return fmt.Sprintf("%d of %d", store.Len(), store.Max())
}

// predecessor is what the previous process left this one.
type predecessor struct {
	conns     []hostrelay.Adopted
	state     *handoverState      // nil: it crashed, or handed nothing
	listeners map[string]*os.File // its listening sockets, by store name
}

// listenerPrefix names a listening socket in the store.
const listenerPrefix = "kt-l."

// keptListeners keeps a host role's listening sockets in its unit's file
// descriptor store, as socket units keep theirs: a guest that connects
// while the role restarts, or after it crashed, waits in the backlog for
// the next process instead of being refused (a Kata agent whose first
// connection fails loses the spans of that export).
type keptListeners struct {
	store keeper // nil: none kept
	log   *slog.Logger

	mu   sync.Mutex
	prev map[string]*os.File // the predecessor's, not yet taken up
	// handingOver is set before a handover closes the listeners: they
	// stay in the store, their unix socket files in place.
	handingOver atomic.Bool
}

// listen is a's listener: the one the predecessor kept, or a new one,
// kept from now on.
func (k *keptListeners) listen(a endpoint.Addr) (net.Listener, error) {
	if a.Scheme == endpoint.SchemeFD {
		return endpoint.Listen(a) // an fd:// socket is its socket unit's
	}
	name := guestid.ListenerStoreName(listenerPrefix, a.String())
	k.mu.Lock()
	f := k.prev[name]
	delete(k.prev, name)
	k.mu.Unlock()
	if f != nil {
		// Taken up even without a store of this process's: it still
		// listens there, and nobody else could.
		ln, err := endpoint.FileListener(f)
		_ = f.Close()
		switch {
		case err == nil && k.store == nil:
			return ln, nil
		case err == nil:
			return &keptListener{Listener: ln, name: name, path: socketPath(a), k: k}, nil
		}
		k.log.Warn("a kept listener could not be taken up; listening anew", "from", a.String(), "err", err)
		forget(k.store, name)
	}
	if k.store == nil {
		return endpoint.Listen(a)
	}
	ln, err := endpoint.Listen(a)
	if err != nil {
		return nil, err
	}
	sock, ok := ln.(syscall.Conn)
	if !ok {
		return ln, nil
	}
	if err := k.store.Keep(name, sock); err != nil {
		k.log.Warn("listener not kept in the file descriptor store: a guest connecting while this process restarts is refused", "from", a.String(), "err", err)
		return ln, nil
	}
	return &keptListener{Listener: ln, name: name, path: socketPath(a), k: k}, nil
}

// socketPath is the file of a's socket: a unix path, not an abstract name.
func socketPath(a endpoint.Addr) string {
	if a.Scheme != endpoint.SchemeUnix || a.Path == "" || a.Path[0] == '@' {
		return ""
	}
	return a.Path
}

// forgetUnused lets go the predecessor's listeners no --from wants now (a
// VM gone while no process ran, a --from changed).
func (k *keptListeners) forgetUnused() {
	k.mu.Lock()
	defer k.mu.Unlock()
	for name, f := range k.prev {
		_ = f.Close()
		forget(k.store, name)
		delete(k.prev, name)
	}
}

// keptListener is a listener in the store. Closed for good (its VM gone,
// the role stopping without a successor), it leaves the store; closed
// for a handover, it stays, and its unix socket file too.
type keptListener struct {
	net.Listener
	name string
	// path is its socket's file, "" for none. Not the listener's Addr:
	// one taken from the store says the temporary name it was bound
	// under (see endpoint.Listen).
	path string
	k    *keptListeners
	once sync.Once
	err  error
}

// SyscallConn is its socket's, so that what needs the socket (a
// watched VM's backlog taken as it goes) finds it through the wrapper.
func (l *keptListener) SyscallConn() (syscall.RawConn, error) {
	sc, ok := l.Listener.(syscall.Conn)
	if !ok {
		return nil, errors.ErrUnsupported
	}
	return sc.SyscallConn()
}

func (l *keptListener) Close() error {
	l.once.Do(func() {
		if l.k.handingOver.Load() {
			if ul, ok := l.Listener.(interface{ SetUnlinkOnClose(bool) }); ok {
				ul.SetUnlinkOnClose(false)
			}
			l.err = l.Listener.Close()
			return
		}
		forget(l.k.store, l.name)
		l.err = l.Listener.Close()
		if l.path != "" {
			// One taken from the store does not remove its file itself.
			_ = os.Remove(l.path)
		}
	})
	return l.err
}

// openStore opens the unit's file descriptor store, if it has one, and
// takes what the previous process left in it.
func openStore(rc *RunContext, max int) (keeper, predecessor, error) {
	files := fdstore.Stored(func(name string) bool {
		return hostrelay.StoredConn(name) || name == fdstore.StateName || strings.HasPrefix(name, listenerPrefix)
	})
	store, err := fdstore.Open(max, len(files))
	if err != nil {
		return nil, predecessor{}, err
	}
	if store == nil {
		return nil, readPredecessor(rc, files, nil), nil
	}
	return store, readPredecessor(rc, files, store), nil
}

// takeOver asks the process waiting at the handover socket path (the
// old pod's, in a rollout) for everything it keeps, within d, and keeps
// it in a store of this process's own; with nobody there, it starts
// afresh. What was taken is committed once the host serves (h.ready).
func takeOver(rc *RunContext, h *handing, path string, d time.Duration) (predecessor, error) {
	if files, err := kept(); err != nil || files != nil {
		if err != nil {
			return predecessor{}, err
		}
		// This process, executed anew: what it kept, no successor served.
		rc.Log.Info("serving again what this process kept: no successor served it", "descriptors", len(files))
		return h.hold(rc, files), nil
	}
	ctx, cancel := context.WithTimeout(rc.Ctx, d)
	defer cancel()
	t, err := handover.Take(ctx, path, rc.Role)
	if err != nil {
		return predecessor{}, fmt.Errorf("--handover-socket %s: taking over from the process there: %w", path, err)
	}
	if t == nil {
		h.store = handover.NewStore()
		rc.Log.Info("no process waits at the handover socket: starting afresh", "path", path)
		return predecessor{}, nil
	}
	h.taken = t
	rc.Log.Info("took over from the process at the handover socket", "path", path, "pid", t.PID, "descriptors", len(t.Files))
	return h.hold(rc, t.Files), nil
}

// readPredecessor sorts what a predecessor left (files, by name; each
// closed here) into its state, its listeners and its connections.
func readPredecessor(rc *RunContext, files map[string]*os.File, store keeper) predecessor {
	var p predecessor
	if f := files[fdstore.StateName]; f != nil {
		delete(files, fdstore.StateName)
		b, err := fdstore.ReadState(f, maxHandover)
		var st handoverState
		if err == nil {
			err = json.Unmarshal(b, &st)
		}
		if err == nil && (st.Version != handoverVersion || st.Role != rc.Role) {
			err = fmt.Errorf("state of version %d from role %q, and this is version %d of %q", st.Version, st.Role, handoverVersion, rc.Role)
		}
		if err != nil {
			rc.Log.Warn("the previous process's handed state is not understood: its connections are taken up as after a crash", "err", err)
		} else {
			p.state = &st
		}
		_ = f.Close()
		// Out at once, with a store of this process's or not: a crash of
		// this process, or a later one, must not find it stale.
		forget(store, fdstore.StateName)
	}
	p.listeners = map[string]*os.File{}
	for name, f := range files {
		if strings.HasPrefix(name, listenerPrefix) {
			p.listeners[name] = f
			delete(files, name)
		}
	}
	states := map[string]*hostrelay.ConnState{}
	if p.state != nil {
		for i, c := range p.state.Server.Conns {
			states[c.Name] = &p.state.Server.Conns[i]
		}
	}
	for _, name := range slices.Sorted(maps.Keys(files)) {
		f := files[name]
		if !hostrelay.StoredConn(name) {
			rc.Log.Warn("a handed socket of no known kind; closed", "name", name)
			_ = f.Close()
			forget(store, name)
			continue
		}
		conn, err := endpoint.FileConn(f)
		_ = f.Close()
		if err != nil {
			rc.Log.Warn("a stored connection could not be taken up; closed", "name", name, "err", err)
			forget(store, name)
			continue
		}
		p.conns = append(p.conns, hostrelay.Adopted{Conn: conn, Name: name, State: states[name]})
	}
	return p
}

// adopt serves what the previous process left: its sink's held batches,
// if for the same sink, and its connections.
func (p predecessor) adopt(log *slog.Logger, srv *hostrelay.Server, out sink.Sink, to string) {
	var sessions map[uint64]hostrelay.SessionMark
	how := "after a crash (no state handed over)"
	if st := p.state; st != nil {
		how, sessions = "after a restart", st.Server.Sessions
		h, ok := sink.Inner(out).(sink.Handing)
		switch {
		case len(st.Held) == 0:
		case ok && st.Sink == to:
			h.Adopt(st.Held)
		default:
			log.Error("the previous process handed over batches for another sink; they are lost",
				"batches", len(st.Held), "their_sink", st.Sink, "to", to)
		}
	}
	if len(p.conns) == 0 && p.state == nil {
		return
	}
	n := srv.Adopt(p.conns, sessions)
	held := 0
	if p.state != nil {
		held = len(p.state.Held)
	}
	log.Info("took up what the previous process kept "+how, "connections", n, "held_batches", held)
}

// keepState writes st to a memfd kept in store as the state the next
// process reads (replacing any), and says its size.
func keepState(store keeper, st handoverState) (int, error) {
	b, err := json.Marshal(st)
	var f *os.File
	if err == nil {
		f, err = fdstore.WriteState(fdstore.StateName, b)
	}
	if err == nil {
		err = store.KeepFile(fdstore.StateName, f)
		_ = f.Close()
	}
	return len(b), err
}

// storeSuccessor is the next process, through a store: the connections
// stay in the store, and their state and what the sink held go there in
// a memfd.
type storeSuccessor struct {
	rc    *RunContext
	store keeper
	kl    *keptListeners
	to    string
	// ends says what ends the connections handed over, for the log.
	ends func() string
}

// HandingOver keeps the listeners in the store as they close.
func (s *storeSuccessor) HandingOver() { s.kl.handingOver.Store(true) }

// Keep stores the handed state, and says what it kept.
func (s *storeSuccessor) Keep(st hostrelay.State, held []sink.HeldBatch) error {
	rc, store := s.rc, s.store
	state := handoverState{Version: handoverVersion, Role: rc.Role, Server: st, Sink: s.to, Held: held}
	n, merr := keepState(store, state)
	if merr != nil {
		rc.Log.Error("the state for the next process could not be stored: it takes the connections up as after a crash, and what the sink held is lost",
			"err", merr, "connections", len(st.Conns), "held_batches", len(state.Held))
		return merr
	}
	// Named, since a stop (not a restart) of the unit ends them all.
	guests := map[string]bool{}
	for _, c := range st.Conns {
		guests[c.Guest] = true
	}
	names := slices.Sorted(maps.Keys(guests))
	if len(names) > 20 {
		names = append(names[:20], fmt.Sprintf("and %d more", len(names)-20))
	}
	rc.Log.Info("handed over to the next process ("+s.ends()+")", "connections", len(st.Conns),
		"guests", strings.Join(names, ", "), "held_batches", len(state.Held),
		"state_bytes", n, "store", size(store))
	return nil
}
