package hostrelay

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/katatrace/katatrace/endpoint"
	"github.com/katatrace/katatrace/guestid"
	"github.com/katatrace/katatrace/hold"
	"github.com/katatrace/katatrace/internal/lograte"
	"github.com/katatrace/katatrace/sandboxid"
	"github.com/katatrace/katatrace/sink"
	"github.com/katatrace/katatrace/wire"
)

// ServerConfig configures the host relay.
type ServerConfig struct {
	// Kind is what this server carries; a framed peer announcing another
	// kind is refused.
	Kind wire.Kind
	Sink sink.Sink
	// ProcRoot is where the host's processes are seen, to find a vsock
	// guest's VMM ("": /proc; a container: the node's, mounted).
	ProcRoot string
	// RawSplit returns, per raw (socat) connection, a split function that
	// recovers datagram boundaries from the byte stream, and tells
	// unparsed of the bytes it skips (counted, per guest too). Nil means
	// each read is one datagram, as socat itself does.
	RawSplit func(from guestid.ID, unparsed func(n int)) bufio.SplitFunc
	// Messages, when set, reads every connection as a stream of messages
	// framed their own way (a Kata agent's spans), not the relay
	// protocol: no hello, nothing sent back, and nothing the peer sends is
	// a reason to close its connection (see peerConn.messages). A message
	// the sink cannot read at all (sink.ErrMalformed) is skipped and
	// counted.
	Messages func(r io.Reader, mem Memory) MessageReader
	// Store keeps connections across restarts of the process (nil:
	// none): each goes in as it is accepted (again under its kind, once
	// its first bytes tell it), and leaves when it ends; Handover hands
	// its state on, and Adopt takes it up.
	Store Store
	// FlushTimeout bounds how long a guest's flush request waits for the
	// sink (default 2 s); the guest is answered either way, told (v2) how
	// many of its datagrams the sink's endpoint has not accepted, and may
	// ask again while it has time.
	FlushTimeout time.Duration
	// Limits against guests that hold what they do not use: connections
	// per listener and per guest (a vsock CID, or the process connecting to
	// a hybrid-vsock socket; default 4096 and 64), the time a connection has
	// to send its hello (default 60 s: a socat guest sends nothing until its
	// first datagram), and the time a frame may stay unfinished (default
	// 60 s). A guest quiet between frames is left alone.
	MaxConns, MaxConnsPerGuest int
	HelloTimeout, FrameTimeout time.Duration
	// GuestRate and GuestBurst are each guest's budget, in bytes of
	// datagrams per second and bytes at once, shared by its connections:
	// while other guests send too, a guest over it is read no faster than
	// it refills, so that one VM flooding cannot crowd the others out of
	// the sink (its excess waits in, and is dropped by, its own queue). A
	// zero rate is no budget.
	GuestRate  float64
	GuestBurst int
	// HeldBytes and HeldBytesPerGuest bound the memory held for frames
	// still arriving, of all guests and of each (default 64 MiB and 16
	// MiB; see package hold): beyond a connection's own small buffer, a
	// frame is read once its room is granted, and waits unread until then.
	HeldBytes, HeldBytesPerGuest int
	Logger                       *slog.Logger
}

// Server is the host relay: it accepts any number of guest streams, framed
// or raw, and hands each datagram whole to the Sink. A peer that breaks the
// protocol is logged and cut off; the others keep going.
type Server struct {
	cfg  ServerConfig
	sink sink.BatchSink
	log  *slog.Logger
	room *hold.Limit

	mu        sync.Mutex
	listeners map[net.Listener]struct{}
	conns     map[*peerConn]struct{}
	// open counts connections per listener; guests are the VMs connected
	// now or lately.
	open     map[string]int
	guests   map[string]*guest
	limitLog *lograte.Every
	// drainEnd is when Shutdown's drain must end, as Unix nanoseconds; zero
	// until Shutdown. It is the draining flag too, so that a connection
	// that sees the drain also sees its deadline.
	drainEnd atomic.Int64
	// drain is closed when Shutdown (or Handover) begins, so that a paced
	// connection stops waiting at once; life ends when Shutdown's context
	// does, cutting a guest's flush that still waits for the sink.
	drain     chan struct{}
	drainOnce sync.Once
	// serves counts the Serve loops (s.mu), so that a stop waits for one
	// that accepted a connection as it began (keepUnread); idle is closed
	// once a stop has begun and neither a loop nor a connection is left
	// (settle).
	serves     int
	idle       chan struct{}
	idleClosed bool
	// handover is set by Handover: connections stop reading at once and
	// keep their state (handed) for a successor.
	handover atomic.Bool
	handed   []ConnState
	life     context.Context
	endLife  context.CancelFunc
	seq      atomic.Uint64

	stats      serverCounters
	sessions   sessions
	contention contention
	sinkLog    *lograte.Every
	protoLog   *lograte.Every
	storeLog   *lograte.Every
}

// ServerStats is a snapshot of what a Server has done: every guest's
// traffic together, and what only the server sees.
type ServerStats struct {
	Traffic
	Active         int64
	ProtocolErrors uint64
	// Refused connections (over a connection limit) and TimedOut ones (no
	// hello, or a frame left unfinished, in time).
	Refused, TimedOut uint64
	// Stored connections are in the file descriptor store now (a restart
	// keeps them); NotStored ones could not be put there; Adopted ones
	// were taken up from a predecessor.
	Stored             int64
	NotStored, Adopted uint64
	// Held is the memory held for frames still arriving (package hold).
	Held hold.Stats
}

// serverCounters are the live counters behind ServerStats.
type serverCounters struct {
	traffic
	protocolErrors, refused, timeouts, notStored, adopted atomic.Uint64
	active, stored                                        atomic.Int64
}

// NewServer returns a Server; give it listeners with Serve.
func NewServer(cfg ServerConfig) *Server {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.FlushTimeout <= 0 {
		cfg.FlushTimeout = 2 * time.Second
	}
	if cfg.MaxConns <= 0 {
		cfg.MaxConns = 4096
	}
	if cfg.MaxConnsPerGuest <= 0 {
		cfg.MaxConnsPerGuest = 64
	}
	if cfg.HelloTimeout <= 0 {
		cfg.HelloTimeout = time.Minute
	}
	if cfg.FrameTimeout <= 0 {
		cfg.FrameTimeout = time.Minute
	}
	if cfg.HeldBytesPerGuest <= 0 {
		cfg.HeldBytesPerGuest = defaultHeldBytesPerGuest
	}
	if cfg.HeldBytes <= 0 {
		cfg.HeldBytes = defaultHeldBytes
	}
	room, err := hold.New(cfg.HeldBytes, cfg.HeldBytesPerGuest)
	if err != nil { // the roles check theirs first: this is a caller's mistake
		panic("hostrelay: " + err.Error())
	}
	life, endLife := context.WithCancel(context.Background())
	return &Server{
		cfg:       cfg,
		room:      room,
		sink:      sink.AsBatchSink(cfg.Sink),
		log:       cfg.Logger,
		listeners: map[net.Listener]struct{}{},
		conns:     map[*peerConn]struct{}{},
		drain:     make(chan struct{}),
		idle:      make(chan struct{}),
		life:      life,
		endLife:   endLife,
		open:      map[string]int{},
		guests:    map[string]*guest{},
		limitLog:  lograte.NewEvery(5 * time.Second),
		sinkLog:   lograte.NewEvery(5 * time.Second),
		protoLog:  lograte.NewEvery(time.Second),
		storeLog:  lograte.NewEvery(5 * time.Second),
	}
}

// The memory held for frames still arriving, unless told otherwise: far
// beyond what agents and guest relays need (a span of a few KiB, a relay
// frame of at most 64 KiB, held one frame at a time per connection), and
// little beside what the host has.
const (
	defaultHeldBytes         = 64 << 20
	defaultHeldBytesPerGuest = 16 << 20
)

// Stats returns a snapshot of the counters.
func (s *Server) Stats() ServerStats {
	c := &s.stats
	return ServerStats{Traffic: c.snapshot(), Active: c.active.Load(), ProtocolErrors: c.protocolErrors.Load(),
		Refused: c.refused.Load(), TimedOut: c.timeouts.Load(),
		Stored: c.stored.Load(), NotStored: c.notStored.Load(), Adopted: c.adopted.Load(), Held: s.room.Stats()}
}

// Serve accepts connections on ln until Shutdown or a fatal accept error.
// name identifies the listener in peer names (its address).
func (s *Server) Serve(ln net.Listener, name string) error {
	s.mu.Lock()
	if s.draining() {
		s.mu.Unlock()
		return ln.Close()
	}
	s.listeners[ln] = struct{}{}
	s.serves++ // under s.mu, as stop begins a drain: never after a stop waits
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, ln)
		s.serves--
		s.settle()
		s.mu.Unlock()
	}()
	var delay time.Duration
	for {
		conn, err := ln.Accept()
		if err != nil {
			if s.draining() {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, syscallEMFILE) {
				// Out of fds or a passing error: wait a little, keep serving.
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				s.log.Warn("accept failed; retrying", "listener", name, "err", err, "retry_in", delay.String())
				time.Sleep(delay)
				continue
			}
			return fmt.Errorf("accept on %s: %w", name, err)
		}
		delay = 0
		id := guestid.Of(conn, name, s.seq.Add(1))
		s.mu.Lock()
		if s.draining() {
			s.mu.Unlock()
			s.keepUnread(conn, id)
			_ = conn.Close()
			return nil
		}
		g := s.guestFor(id.Guest)
		if over := s.overLimit(name, g); over != "" {
			s.mu.Unlock()
			s.stats.refused.Add(1) // before the close a peer (or a test) may see
			_ = conn.Close()
			if ok, n := s.limitLog.Allow(); ok {
				s.log.Warn(s.PeerWord()+" connection refused: "+over, "guest", g.name, "listener", name,
					"refused_total", s.stats.refused.Load(), "not_logged", n)
			}
			continue
		}
		s.open[name]++
		g.conns++
		sc := newStopConn(conn)
		c := &peerConn{srv: s, conn: sc, sc: sc, id: id, peer: id.Conn, g: g, first: g.conns == 1}
		s.conns[c] = struct{}{}
		s.mu.Unlock()
		go s.handle(c, name)
	}
}

// overLimit says which limit a new connection would break, or ""; s.mu
// is held.
func (s *Server) overLimit(listener string, g *guest) string {
	switch {
	case s.open[listener] >= s.cfg.MaxConns:
		return fmt.Sprintf("the listener holds %d connections already", s.cfg.MaxConns)
	case g.conns >= s.cfg.MaxConnsPerGuest:
		return fmt.Sprintf("the guest holds %d connections already", s.cfg.MaxConnsPerGuest)
	}
	return ""
}

// PeerWord is what the log calls a peer: an agent (a Kata agent's span
// stream), else a guest.
func (s *Server) PeerWord() string {
	if s.cfg.Messages != nil {
		return "agent"
	}
	return "guest"
}

// units is what the log calls what a peer sends: spans, or datagrams.
func (s *Server) units() string {
	if s.cfg.Messages != nil {
		return "spans"
	}
	return "datagrams"
}

func (s *Server) handle(c *peerConn, listener string) {
	conn, g := c.conn, c.g
	if !c.adopted {
		s.stats.accepted.Add(1)
		g.accepted.Add(1)
	}
	s.stats.active.Add(1)
	defer func() {
		_ = conn.Close() // kept, it stays open in the store for the successor
		s.stats.active.Add(-1)
		s.mu.Lock()
		if c.kept != nil {
			s.handed = append(s.handed, *c.kept)
		} else {
			s.forgetSocket(c.stored)
		}
		delete(s.conns, c)
		if s.open[listener]--; s.open[listener] <= 0 {
			delete(s.open, listener)
		}
		if g.conns--; g.conns == 0 {
			g.gone = time.Now()
		}
		s.settle()
		s.mu.Unlock()
	}()
	// Kept from the start (a crash a moment later must not end it): a
	// Kata agent sends no hello, a socat guest may send nothing for long.
	if !c.adopted {
		c.storeConn(s.mode())
	}
	if c.first || g.sandbox.Load() == nil {
		id := s.sandboxOf(conn, listener)
		g.sandbox.Store(&id)
	}
	c.id.Sandbox = g.sandboxID() // the sink's, with every message (the guest's, not found again)
	switch {
	case c.adopted:
		c.finish(c.resumeStream())
	case s.cfg.Messages != nil:
		// No hello: the stream's first bytes are its first frame's, and
		// the peer may be quiet as long as it likes before them.
		c.finish(c.messages(s.cfg.Messages(conn, c.room())))
	default:
		c.finish(c.relay(nil))
	}
}

// relay serves a guest relay's stream, framed or raw as its first bytes
// say; pre is what was read of it already (by a predecessor).
func (c *peerConn) relay(pre []byte) error {
	s, conn := c.srv, c.conn
	// A connection that has not said hello holds no frame buffer: idle
	// ones cost a goroutine and this much.
	unread := bytes.NewReader(pre)
	var src io.Reader = conn
	if len(pre) > 0 {
		src = io.MultiReader(unread, conn) // a predecessor's, taken up
	}
	br := bufio.NewReaderSize(src, 64)
	c.setDeadline(time.Now().Add(s.cfg.HelloTimeout))
	h, framed, err := wire.ReadHello(br)
	c.greeted = err == nil
	if c.greeted {
		c.g.greeted.Store(true)
	}
	// What was read and not taken by the hello.
	peeked, _ := br.Peek(br.Buffered())
	rest := append(bytes.Clone(peeked), pre[len(pre)-unread.Len():]...)
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded) && s.draining():
		if s.handingOver() && c.keep(rest, nil) {
			return errHandedOver
		}
	case errors.Is(err, os.ErrDeadlineExceeded):
		err = &limitError{what: "no hello", limit: "hello timeout", after: s.cfg.HelloTimeout}
	}
	c.setDeadline(time.Time{})
	if err != nil {
		return err
	}
	switch {
	case framed && h.Kind != s.cfg.Kind:
		return wire.ProtocolErrorf("peer sends %s streams but this server takes %s", h.Kind, s.cfg.Kind)
	case framed:
		s.log.Info("guest connected", c.named("peer", c.peer, "framing", "framed", "version", int(h.Version), "kind", h.Kind.String())...)
		c.storeConn(storeFramed)
		if h.Version == wire.Version2 {
			c.v2, c.session, c.seq = true, h.Session, h.First
			m := s.sessions.get(h.Session)
			c.delivered, c.lost, c.ackedLost = m.delivered, m.lost, m.lost
			if m.delivered > 0 && h.First > m.delivered {
				c.guestDropped(h.First - m.delivered) // while it was away
			}
		}
		if h, ok := sink.Inner(s.cfg.Sink).(sink.Holder); ok {
			c.sinkLost = h.Lost(c.id.Guest) // a CID used again is a new VM: not told of the old one's
		}
		endpoint.WidenAccepted(conn) // its credit to the guest: several large frames in flight
		return c.framed(c.reader(rest))
	}
	s.log.Info("guest connected", c.named("peer", c.peer, "framing", "raw")...)
	c.storeConn(storeRaw)
	return c.raw(rest)
}

// sandboxOf finds the Kata sandbox behind a new guest connection: from
// the hybrid-vsock socket's path, or from the VMM that has the vsock
// CID; "" where the host cannot know it.
func (s *Server) sandboxOf(conn net.Conn, listener string) string {
	if path, ok := strings.CutPrefix(listener, "unix://"); ok {
		return sandboxid.FromPath(path)
	}
	if cid, ok := endpoint.VsockCID(conn.RemoteAddr()); ok {
		return sandboxid.FromCID(cmp.Or(s.cfg.ProcRoot, "/proc"), cid)
	}
	return ""
}

// named is attrs with the guest's sandbox ID first, when known.
func (c *peerConn) named(attrs ...any) []any {
	if id := c.g.sandboxID(); id != "" {
		return append([]any{"sandbox", id}, attrs...)
	}
	return attrs
}

// ownBuffer is what a connection reads into of its own, from the heap:
// anything larger is room from its guest's share (package hold).
const ownBuffer = 16 << 10

// reader reads the connection with rest (what was read of it already)
// buffered first, and room from its guest's share for frames beyond its
// own buffer; a wait for room ends with the drain.
func (c *peerConn) reader(rest []byte) *hold.Reader {
	return hold.NewReader(c.conn, ownBuffer, c.g.share, c.srv.drain, rest)
}

// room is the connection's guest's share, as a message reader takes it.
func (c *peerConn) room() Memory { return memory{c.g.share, c.srv.drain} }

// Memory gives a message reader room for a message larger than its own
// buffer (waiting for it while the guest's share or the total has none),
// and takes it back (see package hold).
type Memory interface {
	Get(n int) ([]byte, error)
	Put(b []byte)
}

type memory struct {
	share  *hold.Share
	cancel <-chan struct{}
}

func (m memory) Get(n int) ([]byte, error) { return m.share.Get(n, m.cancel) }
func (m memory) Put(b []byte)              { m.share.Put(b) }

// limitError is a connection closed by one of ServerConfig's timeouts.
type limitError struct {
	what, limit string
	after       time.Duration
}

func (e *limitError) Error() string {
	return fmt.Sprintf("%s within %v (the %s)", e.what, e.after, e.limit)
}

// setDeadline sets the read deadline, unless the drain has set its own.
// The check and the setting are one step against Shutdown's (c.dl), so
// that a deadline cannot replace the drain's.
func (c *peerConn) setDeadline(t time.Time) {
	c.dl.Lock()
	defer c.dl.Unlock()
	if hook := testHookSetDeadline.Load(); hook != nil {
		(*hook)()
	}
	if !c.srv.draining() {
		_ = c.conn.SetReadDeadline(t)
	}
}

// testHookSetDeadline runs between a connection's drain check and its
// deadline: tests start a Shutdown there.
var testHookSetDeadline atomic.Pointer[func()]

// peerConn is one guest connection being served.
type peerConn struct {
	srv  *Server
	conn net.Conn // sc
	sc   *stopConn
	// dl orders this connection's read deadlines with the drain's: a
	// deadline set after Shutdown began is the drain's, never a later one.
	dl   sync.Mutex
	id   guestid.ID
	peer string // id.Conn, as logs name it
	g    *guest
	// mode is the kind of stream (a store prefix), as far as it is known;
	// stored its name in the store, if it is there. adopted connections were taken
	// from a predecessor, resume with its state (nil after a crash); kept
	// is the state a handover leaves for the successor.
	mode, stored string
	adopted      bool
	resume, kept *ConnState
	skipped      struct {
		Skipped
		undecodable uint64
	}
	first            bool // the guest's only connection when accepted: find its sandbox
	datagrams, bytes uint64
	unparsed         uint64 // raw bytes the split skipped
	rawSplit         bool   // raw, cut by RawSplit
	paused           time.Duration
	batch            [][]byte // frames not yet handed on, all still in the read buffer
	batchBytes       int
	// v2: datagrams are numbered from the hello's First; seq is the next
	// frame's number, acked the last confirmed, delivered the session's
	// mark below which everything was already handed on (a resent frame
	// below it is a duplicate).
	// lost counts, for the session, datagrams confirmed but not handed on
	// (refused by the sink); a confirmation tells it.
	v2                    bool
	session               uint64
	seq, acked, delivered uint64
	lost, ackedLost       uint64
	duplicates            uint64
	unconfirmed           int       // bytes handed on since the last confirmation
	ackedAt               time.Time // when it was sent
	ackBy                 time.Time // when the next is due, having caught up (zero: none owed so)
	ackDeadline           bool      // the read deadline is ackBy's
	ackBuf                [wire.FrameHeaderSize + 16]byte
	sinkLost              uint64 // the sink's count of this guest's lost datagrams at the last answer
	greeted               bool   // sent a hello, or raw bytes
	frameDeadline         bool   // a --frame-timeout deadline is set
}

// maxBatch bounds what one sendmmsg carries.
const maxBatch, maxBatchBytes = 64, 1 << 20

func (c *peerConn) sinkError(err error, n int) {
	c.srv.stats.sinkErrors.Add(uint64(n))
	c.g.sinkErrors.Add(uint64(n))
	c.lost += uint64(n)
	if ok, suppressed := c.srv.sinkLog.Allow(); ok {
		c.srv.log.Warn("sink refused "+c.srv.units(), "peer", c.peer, "count", n, "err", err,
			"sink_errors_total", c.srv.stats.sinkErrors.Load(), "not_logged", suppressed)
	}
}

// noteUnparsed counts bytes of a raw stream that its split could not
// parse, and skipped.
func (c *peerConn) noteUnparsed(n int) {
	c.unparsed += uint64(n)
	c.srv.stats.unparsed.Add(uint64(n))
	c.g.unparsed.Add(uint64(n))
}

// deliver hands on one datagram (a raw stream's, whose buffer the next read
// reuses) at once.
func (c *peerConn) deliver(p []byte) {
	c.batch = append(c.batch, p)
	c.pace(c.flushBatch())
}

// pace keeps the guest within its budget: when over it, reading from the
// guest waits until the budget refills, so that the excess stays in (and
// is dropped by) the guest's own queue, and the guest's flood costs the
// host nothing. Logged at a bounded rate per guest.
func (c *peerConn) pace(n int) {
	if n == 0 {
		return
	}
	wait := c.srv.budgetWait(c.g, n)
	if wait <= 0 || c.srv.draining() {
		return
	}
	_ = c.ack() // the guest need not wait for the pause to be confirmed; a failed write shows at the next
	if ok, _ := c.g.log.Allow(); ok {
		c.srv.log.Warn(c.srv.PeerWord()+" over its budget: reading from it slowed to the budget", "guest", c.g.name, "peer", c.peer,
			"rate_bytes_per_second", int64(c.srv.cfg.GuestRate), "burst_bytes", c.srv.cfg.GuestBurst,
			"paused_total", (time.Duration(c.g.paused.Load()) + wait).Round(time.Millisecond).String())
	}
	// A drain ends the pause at once: a guest's many connections can owe
	// its budget seconds.
	// The pause is counted as it begins, so that a scrape during a long
	// one sees it; a drain gives back what it cut short.
	c.paused += wait
	c.srv.stats.paused.Add(uint64(wait))
	c.g.paused.Add(uint64(wait))
	start := time.Now()
	t := time.NewTimer(wait)
	select {
	case <-t.C:
	case <-c.srv.drain:
		t.Stop()
		if unused := wait - time.Since(start); unused > 0 {
			c.paused -= unused
			c.srv.stats.paused.Add(-uint64(unused))
			c.g.paused.Add(-uint64(unused))
		}
	}
}

// flushBatch hands on the frames gathered so far, in one call, and returns
// their bytes.
func (c *peerConn) flushBatch() int {
	if len(c.batch) == 0 {
		return 0
	}
	var bytes uint64
	for _, p := range c.batch {
		bytes += uint64(len(p))
	}
	c.bytes += bytes
	c.unconfirmed += int(bytes)
	c.srv.stats.bytes.Add(bytes)
	c.g.bytes.Add(bytes)
	c.datagrams += uint64(len(c.batch))
	c.srv.stats.datagrams.Add(uint64(len(c.batch)))
	c.g.datagrams.Add(uint64(len(c.batch)))
	if failed, err := c.srv.sink.SendBatch(c.batch, c.id); failed > 0 {
		if c.mode == storeMessages && errors.Is(err, sink.ErrMalformed) {
			c.undecodable(failed, err, c.batch[0])
		} else {
			c.sinkError(err, failed)
		}
	}
	clear(c.batch)
	c.batch, c.batchBytes = c.batch[:0], 0
	if c.srv.draining() {
		_ = c.conn.SetReadDeadline(c.srv.drainDeadline())
	}
	return int(bytes)
}

// buffered reports whether the next frame is whole in the read buffer, so
// that reading it does not refill the buffer (which would move the frames
// gathered in the batch).
func buffered(br *hold.Reader) bool {
	if br.Buffered() < wire.FrameHeaderSize {
		return false
	}
	h, _ := br.Peek(wire.FrameHeaderSize)
	return br.Buffered() >= wire.FrameHeaderSize+int(binary.BigEndian.Uint32(h))
}

func (c *peerConn) framed(br *hold.Reader) error {
	defer br.Close()
	// A frame begun must be finished in time, from its first bytes
	// (they may come while the loop below waits for a whole frame), and
	// one that waited for room has its timeout from when it may be read:
	// the wait was the host's, not the guest's. A confirmation owed is
	// sent before such a wait, which may last, so that the guest does not
	// take the host as stalled.
	frameBegins := func() {
		c.setDeadline(time.Now().Add(c.srv.cfg.FrameTimeout))
		c.frameDeadline, c.ackDeadline = true, false
	}
	br.OnBegin = func() {
		if !c.frameDeadline {
			frameBegins()
		}
	}
	br.OnRoom = frameBegins
	br.BeforeRoom = func() { _ = c.ack() } // a failed write shows at the next
	fr := wire.NewFrameReader(br)
	fr.Control = c.v2
	for {
		if !buffered(br) || len(c.batch) == maxBatch || c.batchBytes >= maxBatchBytes {
			n := c.flushBatch()
			// Confirm every confirmBytes or confirmEvery while the stream
			// keeps coming, and confirmDelay after catching up with it: not
			// for each batch, which costs both sides a system call and a
			// wake-up.
			now := time.Now()
			if c.unconfirmed >= confirmBytes || now.Sub(c.ackedAt) >= confirmEvery || !c.ackBy.IsZero() && !now.Before(c.ackBy) {
				if err := c.ack(); err != nil {
					return err
				}
			} else if br.Buffered() == 0 && c.ackBy.IsZero() && c.owesAck() {
				c.ackBy = now.Add(confirmDelay)
			}
			c.pace(n)
			// A frame begun must be finished in time; between frames a
			// guest may be quiet as long as it likes, and a confirmation
			// owed is sent by its time.
			switch inFrame := br.Buffered() > 0; {
			case inFrame:
				c.setDeadline(now.Add(c.srv.cfg.FrameTimeout))
				c.frameDeadline = true
			case !c.ackBy.IsZero():
				if !c.ackDeadline { // set once: ackBy stays until the confirmation goes
					c.setDeadline(c.ackBy)
				}
				c.frameDeadline = false
			case c.frameDeadline || c.ackDeadline:
				c.setDeadline(time.Time{})
				c.frameDeadline = false
			}
			c.ackDeadline = !c.ackBy.IsZero() && !c.frameDeadline
		}
		p, ctl, err := fr.NextFrame()
		if errors.Is(err, os.ErrDeadlineExceeded) && c.ackDeadline && !c.srv.draining() {
			// The guest went quiet with datagrams unconfirmed: now.
			if err := c.ack(); err != nil {
				return err
			}
			c.setDeadline(time.Time{})
			c.ackDeadline = false
			continue
		}
		if errors.Is(err, os.ErrDeadlineExceeded) && !c.srv.draining() {
			err = &limitError{what: "a frame not finished", limit: "frame timeout", after: c.srv.cfg.FrameTimeout}
		}
		if err != nil {
			c.flushBatch() // what arrived whole before the end
			if aerr := c.ack(); aerr == nil && errors.Is(err, os.ErrDeadlineExceeded) && c.srv.handingOver() {
				if rest, _ := br.Peek(br.Buffered()); c.keep(bytes.Clone(rest), nil) {
					return errHandedOver
				}
			}
			return err
		}
		switch {
		case ctl:
			next := binary.BigEndian.Uint64(p)
			if next < c.seq {
				return wire.ProtocolErrorf("sequence frame goes back from %d to %d", c.seq, next)
			}
			c.guestDropped(next - c.seq) // the guest dropped what lies between
			c.seq = next
			continue
		case len(p) > 0:
			seq := c.seq
			c.seq++
			if c.v2 && seq < c.delivered {
				c.duplicates++
				c.srv.stats.duplicates.Add(1)
				c.g.duplicates.Add(1)
				continue
			}
			c.batch = append(c.batch, p)
			c.batchBytes += len(p)
			continue
		}
		c.flushBatch()
		if err := c.ack(); err != nil {
			return err
		}
		c.srv.stats.flushes.Add(1)
		c.g.flushes.Add(1)
		if err := c.write(c.flushSink()); err != nil {
			return fmt.Errorf("answer flush request: %w", err)
		}
	}
}

// guestDropped counts datagrams the guest's relay dropped before sending.
func (c *peerConn) guestDropped(n uint64) {
	c.srv.stats.guestDropped.Add(n)
	total := c.g.guestDropped.Add(n)
	if ok, _ := c.g.dropLog.Allow(); ok {
		c.srv.log.Warn("the guest's relay dropped datagrams before sending them (its queue was full)",
			"guest", c.g.name, "peer", c.peer, "dropped_total", total)
	}
}

func (c *peerConn) write(b []byte) error {
	_ = c.conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	_, err := c.conn.Write(b)
	return err
}

// raw serves a raw (socat) stream, rest what was read of it already.
func (c *peerConn) raw(rest []byte) error {
	if c.srv.cfg.RawSplit == nil {
		if len(rest) > 0 {
			c.deliver(rest)
		}
		buf := make([]byte, wire.MaxDatagram)
		for {
			n, err := c.conn.Read(buf)
			if n > 0 {
				c.deliver(buf[:n])
			}
			if errors.Is(err, os.ErrDeadlineExceeded) && c.srv.handingOver() && c.keep(nil, nil) {
				return errHandedOver
			}
			if err != nil {
				return err
			}
		}
	}
	c.rawSplit = true
	// A message RawSplit cuts is at most twice the largest frame.
	br := c.reader(rest)
	defer br.Close()
	sc := newScanner(br, c.srv.cfg.RawSplit(c.id, c.noteUnparsed), 2*wire.MaxFrameSize)
	var armed time.Time
	// A message's first bytes may come while Scan waits for more: its
	// wait begins then (and again once it had room: the wait for room was
	// the host's).
	messageBegins := func() {
		armed = time.Now()
		c.setDeadline(armed.Add(c.srv.cfg.FrameTimeout))
		c.frameDeadline = true
	}
	br.OnBegin = func() {
		if !c.frameDeadline {
			messageBegins()
		}
	}
	br.OnRoom = messageBegins
	for {
		// A message begun must be finished in time, as a frame must; a
		// guest quiet between messages is left alone. Each message cut
		// is progress: the wait for the next one begun is its own (the
		// deadline is moved on only now and then, not at every message).
		switch partial := len(sc.Rest()) > 0; {
		case partial && (!c.frameDeadline || time.Since(armed) > c.srv.cfg.FrameTimeout/4):
			armed = time.Now()
			c.setDeadline(armed.Add(c.srv.cfg.FrameTimeout))
			c.frameDeadline = true
		case !partial && c.frameDeadline:
			c.setDeadline(time.Time{})
			c.frameDeadline = false
		}
		err := sc.Scan()
		switch {
		case err == nil:
			c.deliver(sc.Bytes())
			continue
		case errors.Is(err, os.ErrDeadlineExceeded) && c.srv.handingOver() && c.keep(bytes.Clone(sc.Rest()), nil):
			return errHandedOver
		case errors.Is(err, os.ErrDeadlineExceeded) && !c.srv.draining():
			c.noteUnparsed(len(sc.Rest())) // the message begun is lost with the connection
			return &limitError{what: "a message not finished", limit: "frame timeout", after: c.srv.cfg.FrameTimeout}
		}
		return err
	}
}

func (c *peerConn) finish(err error) {
	if errors.Is(err, errHandedOver) {
		c.srv.log.Debug("connection kept for the next process", "peer", c.peer, "name", c.stored)
		return
	}
	if c.datagrams == 0 && errors.Is(err, io.EOF) && !c.greeted {
		// Not a guest: a probe (another relay checking whether this socket
		// is alive, a health check) that closed without a byte.
		c.srv.log.Debug("connection closed before sending anything", "peer", c.peer)
		return
	}
	peer := c.srv.PeerWord()
	attrs := c.named("peer", c.peer, "guest", c.g.name)
	if c.mode == storeMessages {
		attrs = append(attrs, "frames", c.datagrams, "spans", c.datagrams-c.skipped.undecodable, "bytes", c.bytes,
			"skipped_frames", c.skipped.undecodable+c.skipped.Oversize+c.skipped.Stalled, "skipped_bytes", c.skipped.Bytes, "resyncs", c.skipped.Resyncs)
	} else {
		attrs = append(attrs, "datagrams", c.datagrams, "bytes", c.bytes)
	}
	if c.paused > 0 {
		attrs = append(attrs, "paused_for_budget", c.paused.Round(time.Millisecond).String())
	}
	if c.v2 {
		attrs = append(attrs, "duplicates_dropped", c.duplicates)
	}
	if c.rawSplit {
		attrs = append(attrs, "unparsed_bytes", c.unparsed)
	}
	switch {
	case c.mode == storeMessages && c.srv.draining() && (errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, net.ErrClosed)):
		// Its exporter never connects again: the VM's tracing ends here.
		c.srv.log.Error("agent's connection closed as this process stops, not kept for a next one (no file descriptor store, or it was full): "+
			"this VM sends no span again until its agent restarts", attrs...)
	case err == nil || errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed):
		c.srv.log.Info(peer+" disconnected", attrs...)
	case errors.Is(err, os.ErrDeadlineExceeded) && c.srv.draining():
		c.srv.log.Info(peer+" connection closed for shutdown", attrs...)
	case errors.As(err, new(*limitError)):
		c.srv.stats.timeouts.Add(1)
		if ok, n := c.srv.limitLog.Allow(); ok {
			c.srv.log.Warn(peer+" connection closed: "+err.Error(), append(attrs, "timeouts_total", c.srv.stats.timeouts.Load(), "not_logged", n)...)
		}
	case wire.IsProtocolError(err):
		c.srv.stats.protocolErrors.Add(1)
		if ok, n := c.srv.protoLog.Allow(); ok {
			c.srv.log.Warn(peer+" broke the protocol; connection closed", append(attrs, "err", err, "not_logged", n)...)
		}
	case errors.Is(err, io.ErrUnexpectedEOF):
		c.srv.log.Warn(peer+" went away inside a frame; the partial frame was discarded", attrs...)
	default:
		c.srv.log.Warn(peer+" connection failed", append(attrs, "err", err)...)
	}
}
