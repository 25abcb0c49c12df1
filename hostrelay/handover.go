package hostrelay

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/katatrace/katatrace/guestid"
	"github.com/katatrace/katatrace/wire"
)

// Store keeps connections across restarts of the process (systemd's file
// descriptor store, package fdstore), so that a peer never sees the host
// go: a Kata agent's exporter keeps one connection for its life and never
// makes another.
type Store interface {
	// Keep puts a connection's socket in the store under name (unique, a
	// valid FDNAME). An error says it could not (the store is full): a
	// restart then ends the connection.
	Keep(name string, sock syscall.Conn) error
	// Forget takes name's connection out of the store: it ended.
	Forget(name string) error
}

// Each connection is kept under a name that says how a successor takes it
// up after a crash, when no state was handed over (guestid.StoreName
// after the prefix).
const (
	// storeNew: a relay's connection that has sent nothing yet (no hello,
	// no raw bytes: socat connects at its start): served as a new one.
	storeNew = "kt-n."
	// storeFramed: the relay protocol, whose session state is the
	// process's: after a crash the connection is closed, and the guest
	// reconnects and resends what was not confirmed.
	storeFramed = "kt-f."
	// storeRaw: a raw (socat) stream, taken up where it is: the split
	// finds the next message.
	storeRaw = "kt-r."
	// storeMessages: a message stream (a Kata agent's spans), taken up
	// where it is: the reader finds the next message.
	storeMessages = "kt-m."
)

// storeModes are the kinds of stored connection, by their prefix.
var storeModes = []string{storeNew, storeFramed, storeRaw, storeMessages}

// storeMode is the kind of a stored connection's name, or "".
func storeMode(name string) string {
	for _, p := range storeModes {
		if strings.HasPrefix(name, p) {
			return p
		}
	}
	return ""
}

// StoredConn reports whether an FDNAME is one of a host relay's
// connections.
func StoredConn(name string) bool { return storeMode(name) != "" }

// errHandedOver ends a connection's serving at a handover: it stays open
// in the store for the successor.
var errHandedOver = errors.New("handed over")

// ConnState is what a successor needs to take a connection up where this
// server stopped reading it.
type ConnState struct {
	Name  string `json:"name"`  // in the store
	Guest string `json:"guest"` // for the log: the VM it is of
	// Framed streams: the protocol version, and v2's numbering (see
	// peerConn).
	Version   byte   `json:"version,omitempty"`
	Session   uint64 `json:"session,omitempty"`
	Seq       uint64 `json:"seq,omitempty"`
	Acked     uint64 `json:"acked,omitempty"`
	Delivered uint64 `json:"delivered,omitempty"`
	Lost      uint64 `json:"lost,omitempty"`
	AckedLost uint64 `json:"acked_lost,omitempty"`
	SinkLost  uint64 `json:"sink_lost,omitempty"`
	// Rest is what was read and not yet handed on (the beginning of the
	// next frame or message); Reader a message reader's state.
	Rest   []byte `json:"rest,omitempty"`
	Reader []byte `json:"reader,omitempty"`
}

// SessionMark is a v2 session's confirmed position: every datagram
// numbered below Delivered was handed on, Lost of them not.
type SessionMark struct {
	Delivered uint64 `json:"delivered"`
	Lost      uint64 `json:"lost"`
}

// State is what a server hands its successor: every connection it kept,
// and the v2 sessions' marks (so that resends are still dropped as
// duplicates).
type State struct {
	Conns    []ConnState            `json:"conns"`
	Sessions map[uint64]SessionMark `json:"sessions,omitempty"`
}

// handingOver reports whether Handover has begun.
func (s *Server) handingOver() bool { return s.handover.Load() }

// keep records c's state for the successor, its connection left open in
// the store; false where it is not in the store (it was full), and so ends
// with this process.
func (c *peerConn) keep(rest, reader []byte) bool {
	if c.stored == "" {
		return false
	}
	st := ConnState{Name: c.stored, Guest: c.g.name, Rest: rest, Reader: reader}
	if c.mode == storeFramed {
		st.Version = 1
		if c.v2 {
			st.Version = 2
		}
		st.Session, st.Seq, st.Acked, st.Delivered = c.session, c.seq, c.acked, c.delivered
		st.Lost, st.AckedLost, st.SinkLost = c.lost, c.ackedLost, c.sinkLost
	}
	c.kept = &st
	return true
}

// Handover stops reading every connection at once, anywhere in a frame
// (what was read and not handed on goes with it), hands what was read
// whole to the sink, and returns what the successor needs to take each
// up where it stopped. The
// connections kept in the store stay open; the others are closed as
// Shutdown closes them. A connection still busy when ctx ends (a sink
// that does not return) is left in the store without its state: the
// successor takes it up as after a crash.
func (s *Server) Handover(ctx context.Context) (State, error) {
	s.handover.Store(true)
	s.stop(time.Now())
	var err error
	select {
	case <-s.idle:
	case <-ctx.Done():
		s.endLife()
		s.mu.Lock()
		n := len(s.conns)
		s.mu.Unlock()
		err = fmt.Errorf("handover cut short with %d connections still busy (the successor takes them up as after a crash): %w", n, context.Cause(ctx))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	st := State{Conns: slices.Clone(s.handed), Sessions: map[uint64]SessionMark{}}
	for id, m := range s.sessions.snapshot() {
		st.Sessions[id] = SessionMark{Delivered: m.delivered, Lost: m.lost}
	}
	return st, err
}

// Adopted is a connection a predecessor kept in the store.
type Adopted struct {
	Conn net.Conn
	Name string // its name in the store
	// State is what the predecessor handed over; nil after a crash.
	State *ConnState
}

// Adopt serves the connections a predecessor kept, before any new one is
// accepted: each where the predecessor stopped (its State), or, after a
// crash, where the stream is. It returns how many it took up; what it
// could not is closed, logged and forgotten.
func (s *Server) Adopt(conns []Adopted, sessions map[uint64]SessionMark) int {
	for id, m := range sessions {
		s.sessions.set(id, mark{m.Delivered, m.Lost})
	}
	taken := 0
	for _, a := range conns {
		ok, err := s.adopt(a)
		switch {
		case err != nil:
			s.log.Warn("a kept connection could not be taken up; closed", "name", a.Name, "err", err)
		case ok:
			taken++
			continue
		}
		_ = a.Conn.Close()
		if s.cfg.Store != nil {
			_ = s.cfg.Store.Forget(a.Name)
		}
	}
	s.stats.adopted.Add(uint64(taken))
	return taken
}

// adopt serves one kept connection, and reports whether it did: a
// relay-protocol connection after a crash is closed instead.
func (s *Server) adopt(a Adopted) (bool, error) {
	mode := storeMode(a.Name)
	seq, listener, err := guestid.ParseStoreName(mode, a.Name)
	switch {
	case mode == "":
		return false, fmt.Errorf("%q is not a host relay's connection", a.Name)
	case err != nil:
		return false, err
	case (mode == storeMessages) != (s.cfg.Messages != nil):
		return false, fmt.Errorf("a %s connection, and this server takes %s", modeName(mode), modeName(s.mode()))
	case mode == storeFramed && a.State == nil:
		// The session state died with the predecessor: the guest
		// reconnects and sends again what was not confirmed.
		s.log.Info("guest connection closed after a crash: the guest reconnects and sends again what was not confirmed", "name", a.Name)
		return false, nil
	case a.State != nil && a.State.Version > wire.Version2:
		return false, fmt.Errorf("protocol version %d in the handed state", a.State.Version)
	}
	id := guestid.Of(a.Conn, listener, seq)
	for {
		old := s.seq.Load()
		if seq <= old || s.seq.CompareAndSwap(old, seq) {
			break // new connections are numbered after every kept one
		}
	}
	s.mu.Lock()
	g := s.guestFor(id.Guest)
	s.open[listener]++
	g.conns++
	sc := newStopConn(a.Conn)
	c := &peerConn{srv: s, conn: sc, sc: sc, id: id, peer: id.Conn, g: g, first: g.conns == 1,
		mode: mode, stored: a.Name, adopted: true, resume: a.State}
	s.conns[c] = struct{}{}
	s.mu.Unlock()
	if s.cfg.Store != nil {
		s.stats.stored.Add(1)
	}
	go s.handle(c, listener)
	return true, nil
}

// mode is the store prefix of this server's connections, as far as it is
// known before they speak: message streams, or the relay's (framed or
// raw, told by the first bytes).
func (s *Server) mode() string {
	if s.cfg.Messages != nil {
		return storeMessages
	}
	return storeNew
}

// keepUnread puts a connection accepted as the server stops, unread, in
// the store for the successor to serve as a new one; without a handover
// (or a store) it is closed, and a Kata agent's is said to end.
func (s *Server) keepUnread(conn net.Conn, id guestid.ID) {
	name := id.StoreName(s.mode())
	err := errors.New("no file descriptor store")
	if s.handingOver() && s.cfg.Store != nil {
		err = s.keepSocket(conn, name)
	}
	if err != nil {
		if s.cfg.Messages != nil {
			s.log.Error("agent's connection, accepted as this process stops, not kept for a next one: this VM sends no span again until its agent restarts",
				"guest", id.Guest, "peer", id.Conn, "err", err)
		}
		return
	}
	s.mu.Lock()
	s.handed = append(s.handed, ConnState{Name: name, Guest: id.Guest}) // nothing read of it
	s.mu.Unlock()
}

// keepSocket puts conn in the store under name, counted; s.cfg.Store is
// set.
func (s *Server) keepSocket(conn net.Conn, name string) error {
	if w, ok := conn.(*stopConn); ok {
		conn = w.Conn
	}
	sock, ok := conn.(syscall.Conn)
	err := fmt.Errorf("%T has no descriptor to store", conn)
	if ok {
		err = s.cfg.Store.Keep(name, sock)
	}
	if err != nil {
		s.stats.notStored.Add(1)
		return err
	}
	s.stats.stored.Add(1)
	return nil
}

// forgetSocket takes name's connection out of the store, counted.
func (s *Server) forgetSocket(name string) {
	if name != "" && s.cfg.Store != nil {
		_ = s.cfg.Store.Forget(name)
		s.stats.stored.Add(-1)
	}
}

func modeName(mode string) string {
	switch mode {
	case storeMessages:
		return "message stream (Kata agent)"
	case storeRaw:
		return "raw relay"
	}
	return "relay protocol"
}

// storeConn puts c's connection in the store as what it is: at once, and
// again once its first bytes tell a relay's kind (then it leaves the
// store a moment: two names for one socket would be served twice).
func (c *peerConn) storeConn(mode string) {
	c.mode = mode
	s := c.srv
	if s.cfg.Store == nil || storeMode(c.stored) == mode {
		return
	}
	s.forgetSocket(c.stored)
	c.stored = ""
	name := c.id.StoreName(mode)
	if err := s.keepSocket(c.conn, name); err != nil {
		if ok, n := s.storeLog.Allow(); ok {
			s.log.Warn("connection not kept in the file descriptor store: a restart of this process will end it", c.named(
				"guest", c.g.name, "peer", c.peer, "err", err, "not_stored_total", s.stats.notStored.Load(), "not_logged", n)...)
		}
		return
	}
	c.stored = name
}

// resumeStream serves an adopted connection where its predecessor
// stopped, or after a crash where the stream is.
func (c *peerConn) resumeStream() error {
	st := c.resume
	how := "after a restart"
	switch {
	case st == nil && c.mode == storeNew:
		how, st = "after a crash (it had sent nothing)", &ConnState{}
	case st == nil:
		how, st = "after a crash: looking for the next frame", &ConnState{}
	}
	c.greeted = true
	c.g.greeted.Store(true)
	c.srv.log.Info(c.srv.PeerWord()+"'s connection taken up "+how, c.named("peer", c.peer, "guest", c.g.name, "name", c.stored)...)
	switch c.mode {
	case storeNew:
		return c.relay(st.Rest)
	case storeMessages:
		mr := c.srv.cfg.Messages(c.conn, c.room())
		switch {
		case c.resume == nil:
			mr.Lose()
		case len(st.Reader) == 0: // handed unread
		default:
			if err := mr.Restore(st.Reader); err != nil {
				c.srv.log.Warn("a handed stream state was not understood: looking for the next frame", "peer", c.peer, "err", err)
				mr.Lose()
			}
		}
		return c.messages(mr)
	case storeRaw:
		return c.raw(st.Rest)
	}
	c.v2 = st.Version == wire.Version2
	c.session, c.seq, c.acked, c.delivered = st.Session, st.Seq, st.Acked, st.Delivered
	c.lost, c.ackedLost, c.sinkLost = st.Lost, st.AckedLost, st.SinkLost
	c.ackedAt = time.Now()
	return c.framed(c.reader(st.Rest))
}
