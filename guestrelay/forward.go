package guestrelay

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/katatrace/katatrace/internal/lograte"
	"github.com/katatrace/katatrace/wire"
)

// Config configures the guest relay.
type Config struct {
	Kind wire.Kind
	// Framing is Framed (wire protocol v2: the host confirms what it
	// handed on, and what it did not confirm is sent again after a
	// reconnect), FramedV1 (for a host that speaks only v1), or Raw: bare
	// payloads with no hello and no frames, for a host that runs socat
	// (datagram boundaries and flush answers are then lost).
	Framing Framing
	// Dial opens the stream to the host; Target names it in logs.
	Dial   func(ctx context.Context) (net.Conn, error)
	Target string
	// QueueBytes bounds what is held while the host is absent or slow.
	QueueBytes int
	// BackoffMin and BackoffMax bound the wait between reconnection attempts.
	BackoffMin, BackoffMax time.Duration
	Logger                 *slog.Logger
	// Rand, if set, draws the session number and the backoff's jitter in
	// place of math/rand/v2's global source, so that a simulation's seed
	// replays its schedule. One goroutine uses it at a time.
	Rand *rand.Rand
}

// forwarder is the guest relay's engine: datagrams go into a bounded queue, and one
// reconnecting stream carries them to the host in order. Every datagram it
// accepted is written whole or counted as dropped, never truncated; a frame
// cut short by a broken connection is sent again, whole, on the next one.
type forwarder struct {
	cfg  Config
	fr   framer
	q    *queue
	log  *slog.Logger
	wbuf []byte // the batch being written; run's alone
	// tickets are the flushes of the batch being written; run's alone.
	tickets []uint64
	// pending is what a failed write left unsent (whole frames), and
	// pendingFlushes the tickets of the flush requests among them (v1);
	// run's alone.
	pending        []byte
	pendingFlushes []uint64
	// session names this relay to the host (v2); wire is the number the
	// host gives the next datagram frame on this connection. run's alone.
	sessionID, wire uint64
	heard           atomic.Bool // the host confirmed or answered on this connection
	connected       atomic.Bool // a connection to the host is up

	mu sync.Mutex
	// answered is the newest flush answered (see queue.flushes): every
	// flush up to it is; clean the newest answered clean (the endpoint
	// had accepted everything), held what the last answer said was not
	// accepted, cleanAcked how many datagrams were confirmed by the
	// newest clean answer; unaccepted counts the answers that were not
	// clean, lastUnaccepted the newest such count. asked are the tickets
	// of the flush requests written on this connection and not answered
	// yet, oldest first: the host answers them in order.
	answered, clean, held, cleanAcked uint64
	unaccepted, lastUnaccepted        uint64
	asked                             []uint64
	changed                           chan struct{} // closed at each answer
	// kick ends the wait before the next attempt to reach the host.
	kick chan struct{}

	sent, sentBytes, connects, dialFailures atomic.Uint64
	hostDropped                             atomic.Uint64
	// hostHeld is what the host's last flush answer said its endpoint had
	// not accepted of this guest's datagrams.
	hostHeld atomic.Uint64
	// inspect, if set, sees every datagram read from the socket first.
	inspect atomic.Pointer[func([][]byte)]
	// socketDropped reads the kernel's count of datagrams its socket
	// dropped (set by ReadFrom for UDP); holdLog notes reading held.
	socketDropped                   atomic.Pointer[func() uint64]
	unread                          atomic.Uint64 // left in the socket when the drain ran out
	holdLog                         *lograte.Every
	dropLog, rejectLog, hostDropLog *lograte.Every
}

// Stats is a snapshot of a relay's counters.
type Stats struct {
	Queue           QueueStats
	Sent            uint64 // datagrams written to the host stream
	SentBytes       uint64 // their payload bytes
	Connects        uint64 // connections made
	DialFailures    uint64 // attempts that failed
	FlushesAnswered uint64
	Connected       bool // a connection to the host is up
	// SocketDropped are datagrams the kernel dropped at the socket read
	// from, its buffer full: while the host was connected but slower than
	// they came, reading waited for room in the queue (UDP only); and
	// those still in the socket when a stop's drain ran out of time.
	SocketDropped uint64
	// HostDropped are datagrams the host confirmed but could not hand on
	// (its sink refused them), as it last said.
	HostDropped uint64
	// HostUnaccepted are datagrams the host handed to its sink whose
	// endpoint (a collector) had not accepted them, as its last flush
	// answer said: held there for retrying, or lost.
	HostUnaccepted uint64
}

// LogAttrs are the counters as log attributes.
func (s Stats) LogAttrs() []any {
	return []any{"received", s.Queue.Enqueued + s.Queue.Rejected, "sent", s.Sent, "sent_bytes", s.SentBytes,
		"confirmed", s.Queue.Acked, "dropped", s.Queue.Dropped, "refused", s.Queue.Rejected, "queued", s.Queue.Queued, "unconfirmed", s.Queue.Unacked,
		"host_dropped", s.HostDropped, "host_unaccepted", s.HostUnaccepted, "socket_dropped", s.SocketDropped, "connects", s.Connects, "dial_failures", s.DialFailures}
}

// writeBatch bounds one write to the host: large enough that big datagrams
// go several to a system call (with the stream's 1 MiB in flight, 256 KiB
// moved as much as 512 KiB, in less memory).
const writeBatch = 256 << 10

// newForwarder returns a forwarder; start it with run.
func newForwarder(cfg Config) *forwarder {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.BackoffMin <= 0 {
		cfg.BackoffMin = 100 * time.Millisecond
	}
	cfg.BackoffMax = max(cfg.BackoffMax, cfg.BackoffMin)
	session := rand.Uint64
	if cfg.Rand != nil {
		session = cfg.Rand.Uint64
	}
	return &forwarder{
		cfg:         cfg,
		tickets:     make([]uint64, 0, 8),
		fr:          cfg.Framing.framer(),
		q:           cfg.Framing.queue(cfg.QueueBytes),
		sessionID:   session(),
		log:         cfg.Logger,
		wbuf:        make([]byte, 0, writeBatch),
		pending:     make([]byte, 0, 2*wire.MaxFrameSize),
		changed:     make(chan struct{}),
		kick:        make(chan struct{}, 1),
		dropLog:     lograte.NewEvery(5 * time.Second),
		rejectLog:   lograte.NewEvery(5 * time.Second),
		hostDropLog: lograte.NewEvery(5 * time.Second),
		holdLog:     lograte.NewEvery(time.Minute),
	}
}

// Kind is what the forwarder carries.
func (f *forwarder) Kind() wire.Kind { return f.cfg.Kind }

// Stats returns a snapshot of the counters.
func (f *forwarder) Stats() Stats {
	f.mu.Lock()
	answered := f.answered
	f.mu.Unlock()
	return Stats{
		Queue:           f.q.Stats(),
		Sent:            f.sent.Load(),
		SentBytes:       f.sentBytes.Load(),
		Connects:        f.connects.Load(),
		DialFailures:    f.dialFailures.Load(),
		FlushesAnswered: answered,
		HostDropped:     f.hostDropped.Load(),
		HostUnaccepted:  f.hostHeld.Load(),
		Connected:       f.connected.Load(),
		SocketDropped:   f.socketDrops(),
	}
}

// Send queues one datagram for the host. It never blocks: when the queue is
// full the oldest datagrams make room, and the drop is counted and logged.
func (f *forwarder) Send(p []byte) {
	dropped, ok := f.q.Push(p)
	refused := 0
	if !ok {
		refused = 1
	}
	f.noteDrops(dropped, refused, len(p))
}

// SendBatch is Send for several datagrams, with one wake-up of the sender.
func (f *forwarder) SendBatch(ps [][]byte) {
	dropped, refused := f.q.PushBatch(ps)
	size := 0
	if refused > 0 { // the log names a refused size; rare, so look it up
		i := slices.IndexFunc(ps, func(p []byte) bool { return len(p) == 0 || len(p) > wire.MaxDatagram })
		size = len(ps[i])
	}
	f.noteDrops(dropped, refused, size)
}

func (f *forwarder) noteDrops(dropped, refused, size int) {
	if refused > 0 {
		if ok, n := f.rejectLog.Allow(); ok {
			f.log.Warn("datagram refused: a frame carries 1 to 65535 bytes",
				"size", size, "refused_total", f.q.Stats().Rejected, "not_logged", n)
		}
	}
	if dropped > 0 {
		if ok, n := f.dropLog.Allow(); ok {
			s := f.q.Stats()
			f.log.Warn("queue full: dropped oldest datagrams",
				"queue_bytes", f.q.Cap(), "dropped_total", s.Dropped, "dropped_bytes_total", s.DroppedBytes,
				"target", f.cfg.Target, "not_logged", n)
		}
	}
}

// noteHostDropped records the host's count of this session's datagrams it
// confirmed without handing them on.
func (f *forwarder) noteHostDropped(n uint64) {
	for {
		old := f.hostDropped.Load()
		if n <= old {
			return
		}
		if f.hostDropped.CompareAndSwap(old, n) {
			break
		}
	}
	if ok, _ := f.hostDropLog.Allow(); ok {
		f.log.Warn("the host could not hand on datagrams of this guest: its sink refused them",
			"target", f.cfg.Target, "host_dropped_total", n)
	}
}

// NotAcceptedError is a flush the host answered saying that its sink's
// endpoint (a collector) had not accepted some of this guest's datagrams:
// the host holds them for retrying, or lost them.
type NotAcceptedError struct{ Datagrams uint64 }

func (e *NotAcceptedError) Error() string {
	return fmt.Sprintf("the host answered, but its endpoint has not accepted %d of this guest's datagrams (the host holds them for retrying, or dropped them)", e.Datagrams)
}

// reaskPause spaces the flush requests of a guest whose host said its
// endpoint had not accepted everything: the host itself waits on its
// endpoint for each.
const reaskPause = 100 * time.Millisecond

// Flush asks the host to confirm that it has handed every datagram queued
// before this call to its sink, and waits for the answer or ctx. A v2 host
// that answers that its endpoint has not accepted everything is asked
// again while ctx allows; then Flush returns a *NotAcceptedError. Any
// clean answer to a request asked at or after this call's first ends it:
// it tells of everything before. In raw mode no answer can come: Flush
// returns once those datagrams are written.
//
// Without a host to ask, it returns nil at once only when it knows:
// nothing is queued or unconfirmed, and no datagram was confirmed since a
// clean answer (the host that confirmed one may still hold it in its
// sink, or have handed it to its successor). Otherwise it reconnects to
// ask, within ctx, or says it could not.
func (f *forwarder) Flush(ctx context.Context) error {
	if f.known() {
		return nil
	}
	first := f.q.PushFlush()
	ticket, since := first, time.Now()
	f.mu.Lock()
	unaccepted := f.unaccepted
	f.mu.Unlock()
	if !f.connected.Load() {
		f.redial()
	}
	var pause *time.Timer
	var reask <-chan time.Time
	defer func() {
		if pause != nil {
			pause.Stop()
		}
	}()
	for {
		f.mu.Lock()
		clean, answered, held, ch := f.clean >= first, f.answered >= ticket, f.held, f.changed
		f.mu.Unlock()
		if clean {
			return nil
		}
		if answered && reask == nil {
			// Not accepted: asked again after a pause, unless a clean
			// answer (to this or a later request) comes first.
			pause = time.NewTimer(reaskPause)
			reask = pause.C
		}
		select {
		case <-ch:
		case <-reask:
			reask = nil
			// A request queued since (another flush's) asks for this one
			// too: the host waits on its endpoint for each.
			f.mu.Lock()
			last := f.answered
			f.mu.Unlock()
			if newer := f.q.LastFlush(); newer > last {
				ticket = newer
			} else {
				ticket, since = f.q.PushFlush(), time.Now()
			}
		case <-ctx.Done():
			if answered {
				return &NotAcceptedError{held}
			}
			s := f.q.Stats()
			why := ""
			if !f.connected.Load() {
				why = "not connected, the host could not be asked; "
			}
			err := fmt.Errorf("flush to %s not answered: %w (%s%d datagrams, %d bytes still queued; asked %v ago)",
				f.cfg.Target, context.Cause(ctx), why, s.Queued, s.QueuedBytes, time.Since(since).Round(time.Millisecond))
			f.mu.Lock()
			if f.unaccepted > unaccepted {
				held = f.lastUnaccepted
			}
			f.mu.Unlock()
			if held > 0 {
				// What the host said of its endpoint, answering this
				// flush or an earlier one (the requests ahead of this
				// one wait on it too), last or while this one waited, is
				// why, or is to be told anyway: a later clean answer does
				// not take back what was lost.
				return fmt.Errorf("%w; before that, %w", err, &NotAcceptedError{held})
			}
			return err
		}
	}
}

// known reports whether a flush may return at once, asking no host:
// no host is connected (one that is, is asked), nothing is queued or
// unconfirmed, the last answer was clean, and every datagram confirmed
// was confirmed before it. v1 confirms nothing: it always asks.
func (f *forwarder) known() bool {
	if f.connected.Load() || f.cfg.Framing == FramedV1 {
		return false
	}
	s := f.q.Stats()
	f.mu.Lock()
	defer f.mu.Unlock()
	return s.Queued == 0 && s.Unacked == 0 && f.held == 0 && s.Acked == f.cleanAcked
}

// redial cuts short the wait before the next attempt to reach the host: a
// flush needs one now.
func (f *forwarder) redial() {
	select {
	case f.kick <- struct{}{}:
	default:
	}
}

// answer notes that the flush of ticket t is answered, and with it every
// flush before it (an answer tells of everything before its request; a
// flush asked again after a reconnect may be answered twice), with held
// of this guest's datagrams not accepted by the host's endpoint. A clean
// answer (held 0) also tells of every datagram confirmed before it,
// acked of them in all: the host confirms what it handed on before it
// answers, and its endpoint had accepted all it held of this guest's.
func (f *forwarder) answer(t, held, acked uint64) {
	f.hostHeld.Store(held)
	f.mu.Lock()
	f.held = held
	if held > 0 {
		f.unaccepted++
		f.lastUnaccepted = held
	} else {
		f.clean = max(f.clean, t)
		f.cleanAcked = max(f.cleanAcked, acked)
	}
	f.answered = max(f.answered, t)
	close(f.changed)
	f.changed = make(chan struct{})
	f.mu.Unlock()
}

// takeAsked takes the ticket of the oldest flush request asked on this
// connection: the one the host's next answer answers.
func (f *forwarder) takeAsked() (uint64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.asked) == 0 {
		return 0, wire.ProtocolErrorf("host answered a flush request that was not asked")
	}
	t := f.asked[0]
	f.asked = f.asked[1:]
	return t, nil
}

func (f *forwarder) socketDrops() uint64 {
	n := f.unread.Load()
	if fn := f.socketDropped.Load(); fn != nil {
		n += (*fn)()
	}
	return n
}

// drainPlan is what a stop tells reading: when the stop began, and when
// reading must end at the latest; reading also ends with ctx, the stop's.
type drainPlan struct {
	began, end time.Time
	ctx        context.Context
}

// errLate is a read that reached a datagram that came in after the stop
// began: everything that was waiting then is read.
var errLate = errors.New("read what came in after the stop began")

// readFrom reads datagrams from pc into the queue until ctx is done. Then
// it reads what was already waiting in the socket when the stop began
// (plan says when; the kernel stamps each datagram as it comes in), not
// what the socket's client keeps sending after, within the plan's time; a
// socket that cannot say when a datagram came in is read until a read
// finds it empty for a moment (drainGap): a socket keeps order, so
// everything that was waiting is read by then, and a client that keeps
// sending is not waited out for a quiet that may never come (the flush
// needs the time). It reads up to readBatch datagrams per system call
// (recvmmsg).
//
// While a host is connected and the queue is full, reading waits for room
// (see hold): what this process would read only to drop stays in the
// kernel's socket buffer, and what overflows that is dropped there,
// counted (SocketDropped), at no cost to the relay. A host that makes no
// room within holdMax is taken as stalled, and reading goes on, dropping
// the oldest, as while no host is connected.
func (f *forwarder) readFrom(ctx context.Context, pc net.PacketConn, plan func() drainPlan) error {
	sr := readerFor(pc)
	send := func(ps [][]byte) {
		if in := f.inspect.Load(); in != nil {
			(*in)(ps)
		}
		f.SendBatch(ps)
	}
	if sr.dropped != nil {
		f.socketDropped.Store(&sr.dropped)
		defer sr.dropped() // the last count, read before the caller closes the socket
	}
	wake := func() { _ = pc.SetReadDeadline(time.Now()) }
	stop := context.AfterFunc(ctx, wake)
	defer stop()
	hold := time.NewTimer(holdMax)
	hold.Stop()
	stalled := false
	var p *drainPlan
	idle := drainIdle
	holdCtx := ctx
	for {
		stalled = f.hold(holdCtx, hold, stalled)
		if p != nil {
			if p.ctx.Err() != nil {
				break // the stop's time is up: this deadline would put off wake's
			}
			// The quiet that ends a drain is counted from here: time
			// spent holding for room in the queue is not quiet.
			_ = pc.SetReadDeadline(earliest(p.end, time.Now().Add(idle)))
		}
		err := sr.read(send)
		switch {
		case err == nil:
			continue
		case errors.Is(err, errLate):
			return nil
		case !errors.Is(err, os.ErrDeadlineExceeded):
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("read datagrams: %w", err)
		case ctx.Err() == nil: // a deadline that was not ours
			continue
		case p == nil:
			p = new(plan())
			if !sr.cutoff(p.began) {
				idle = drainGap
			}
			stopDrain := context.AfterFunc(p.ctx, wake)
			defer stopDrain()
			// Draining: still no faster than the host takes it, within
			// reading's share of the stop (a wait for room would take the
			// flush's).
			var endHold context.CancelFunc
			holdCtx, endHold = context.WithDeadline(p.ctx, p.end)
			defer endHold()
			continue
		}
		break // quiet, out of time, or the stop's context ended
	}
	f.countUnread(p.ctx, pc, sr)
	return nil
}

// countUnread counts, as dropped at the socket, the datagrams still in it
// that were waiting when the stop began, once its drain ran out of time:
// the socket closes with them. It takes at most countMax, within the
// stop's ctx.
func (f *forwarder) countUnread(ctx context.Context, pc net.PacketConn, sr socketReader) {
	var n uint64
	end := time.Now().Add(countMax)
	if d, ok := ctx.Deadline(); ok {
		end = earliest(end, d)
	}
	// A deadline already past reads nothing: each read gets a moment.
	for time.Now().Before(end) && ctx.Err() == nil {
		_ = pc.SetReadDeadline(earliest(end, time.Now().Add(time.Millisecond)))
		if sr.read(func(ps [][]byte) { n += uint64(len(ps)) }) != nil {
			break
		}
	}
	if n > 0 {
		f.unread.Add(n)
		f.log.Warn("the drain ran out of time: datagrams still in the socket dropped", "target", f.cfg.Target, "dropped", n)
	}
}

// countMax bounds counting what a drain left in the socket: a socket that
// cannot say when a datagram came in is never quiet while its client
// keeps sending.
const countMax = 50 * time.Millisecond

// holdMax is how long reading waits for a connected host to make room in a
// full queue before taking it as stalled.
const holdMax = 100 * time.Millisecond

// hold waits, while a host is connected and the queue is full, until the
// sender makes room, ctx ends, or holdMax passes with no room made (the
// host is stalled: no more waiting until room is made again). It returns
// whether the host is stalled.
func (f *forwarder) hold(ctx context.Context, t *time.Timer, stalled bool) bool {
	select {
	case <-f.q.Room():
		stalled = false
	default:
	}
	// Room for a whole read of the largest datagrams and a quarter of the
	// queue (what a saturated relay holds, so keeps resident, is the rest;
	// it is still more than the stream and the host hold unconfirmed), or
	// half the queue.
	need := min(max(readBatch*wire.MaxFrameSize, f.q.Cap()/4), f.q.Cap()/2)
	if stalled || !f.connected.Load() || f.q.Free() >= need {
		return stalled
	}
	if ok, _ := f.holdLog.Allow(); ok {
		f.log.Info("the host is slower than datagrams come: reading waits for room in the queue; the kernel drops what overflows its socket buffer, counted",
			"target", f.cfg.Target, "queue_bytes", f.q.Cap(), "socket_dropped_total", f.socketDrops())
	}
	t.Reset(holdMax)
	defer t.Stop()
	for f.q.Free() < need {
		select {
		case <-f.q.Room():
		case <-t.C:
			return true
		case <-ctx.Done():
			return false
		}
	}
	return false
}

// readBatch is how many datagrams one recvmmsg takes. Each needs a 64 KiB
// buffer; pages only become resident as large datagrams fill them.
const readBatch = 4

// socketReader reads a datagram socket.
type socketReader struct {
	// read reads one or more datagrams and hands them to send, allocating
	// nothing per datagram.
	read func(send func([][]byte)) error
	// cutoff makes read return errLate, after handing them on, once it
	// reads a datagram that came in after t; false if it cannot tell.
	cutoff func(t time.Time) bool
	// dropped counts what the kernel dropped at a UDP socket; nil for
	// others (a unix datagram socket's sender waits instead).
	dropped func() uint64
}

func readerFor(pc net.PacketConn) socketReader {
	if sc, ok := pc.(syscall.Conn); ok {
		if br, err := newBatchReader(sc, readBatch); err == nil {
			sr := socketReader{read: br.read, cutoff: br.cutoff}
			if _, udp := pc.(*net.UDPConn); udp {
				sr.dropped = br.dropped
			}
			return sr
		}
	}
	buf := make([]byte, wire.MaxDatagram+1) // one byte more, to see oversize datagrams
	one := [][]byte{nil}
	r, ok := pc.(io.Reader) // no address allocated per datagram
	return socketReader{read: func(send func([][]byte)) error {
		var n int
		var err error
		if ok {
			n, err = r.Read(buf)
		} else {
			n, _, err = pc.ReadFrom(buf)
		}
		if err == nil {
			one[0] = buf[:n]
			send(one)
		}
		return err
	}, cutoff: func(time.Time) bool { return false }}
}

func earliest(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// drainIdle is how long a socket that stamps what comes in must stay
// quiet for a drain to end (a datagram stamped after the stop ends it
// sooner); drainGap how long one that cannot must be found empty. Not
// less: a read whose deadline passed before it began (its goroutine not
// run meanwhile) looks at nothing.
const (
	drainIdle = 50 * time.Millisecond
	drainGap  = 5 * time.Millisecond
)

// run connects to the host and sends what the queue holds, reconnecting
// with capped, jittered exponential backoff, until ctx is done.
func (f *forwarder) run(ctx context.Context) {
	backoff, failures := f.cfg.BackoffMin, 0
	for {
		conn, err := f.cfg.Dial(ctx)
		if ctx.Err() != nil {
			if conn != nil {
				_ = conn.Close()
			}
			return
		}
		if err != nil {
			f.dialFailures.Add(1)
			failures++
			lvl := slog.LevelDebug
			if failures == 1 {
				lvl = slog.LevelWarn
			}
			f.log.Log(ctx, lvl, "host not reachable; queueing datagrams and retrying",
				"target", f.cfg.Target, "err", err, "attempt", failures, "retry_in", backoff.String())
			if !f.sleep(ctx, backoff) {
				return
			}
			backoff = min(2*backoff, f.cfg.BackoffMax)
			continue
		}
		f.connects.Add(1)
		lvl := slog.LevelInfo
		if failures > 1 {
			lvl = slog.LevelDebug // a host that keeps hanging up was said already
		}
		f.log.Log(ctx, lvl, "connected to host", "target", f.cfg.Target, "framing", f.cfg.Framing.String(),
			"failed_attempts", failures, "queued", f.q.Stats().Queued)
		started := time.Now()
		err = f.session(ctx, conn)
		_ = conn.Close()
		if ctx.Err() != nil {
			return
		}
		s := f.q.Stats()
		attrs := []any{"target", f.cfg.Target, "err", err, "queued", s.Queued, "unconfirmed", s.Unacked, "unsent_bytes", len(f.pending)}
		if f.cfg.Framing == Framed && !f.heard.Load() {
			// A host older than v2 reads the hello, refuses the version and
			// hangs up: nothing is ever confirmed.
			attrs = append(attrs, "hint", "if the host runs a katatrace older than wire protocol v2, start this relay with --framing=v1")
		}
		if f.heard.Load() || time.Since(started) >= shortSession {
			backoff, failures = f.cfg.BackoffMin, 0
			f.log.Warn("connection to host lost; reconnecting", attrs...)
			continue
		}
		// The host hung up at once without a word (a port of another
		// kind, an old host): wait as after a failed dial, or a relay
		// pointed at the wrong host spins, reconnecting.
		failures++
		lvl = slog.LevelDebug
		if failures == 1 {
			lvl = slog.LevelWarn
		}
		f.log.Log(ctx, lvl, "the host closed the connection at once; retrying", append(attrs, "attempt", failures, "retry_in", backoff.String())...)
		if !f.sleep(ctx, backoff) {
			return
		}
		backoff = min(2*backoff, f.cfg.BackoffMax)
	}
}

// shortSession is how long a connection on which the host said nothing
// must last to count as made: shorter, it is a failed attempt.
const shortSession = time.Second

// sleep waits about d (jittered, so that many guests do not retry in
// step), until a flush needs a host (redial), or until ctx is done (then
// false).
func (f *forwarder) sleep(ctx context.Context, d time.Duration) bool {
	var jitter time.Duration
	if f.cfg.Rand != nil {
		jitter = time.Duration(f.cfg.Rand.Int64N(int64(d/2 + 1)))
	} else {
		jitter = rand.N(d/2 + 1)
	}
	t := time.NewTimer(d/2 + jitter)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
	case <-f.kick: // a flush waits for a host
	}
	return true
}

// session sends on one connection until it fails or ctx is done.
func (f *forwarder) session(ctx context.Context, conn net.Conn) error {
	stop := context.AfterFunc(ctx, func() { _ = conn.Close() })
	defer stop()
	dead := make(chan error, 1)
	readerDone := make(chan struct{})
	go func() { dead <- f.readAnswers(conn); close(readerDone) }()
	// The reader must be gone before the next session counts in-flight
	// flushes, so its last answers are not credited to the wrong
	// connection, and before a flush may take the relay as disconnected
	// (what it confirmed and answered is counted by then).
	f.heard.Store(false)
	f.connected.Store(true)
	select { // a flush's redial from before is done with
	case <-f.kick:
	default:
	}
	defer func() { _ = conn.Close(); <-readerDone; f.connected.Store(false) }()
	if b := f.fr.greet(f, f.wbuf[:0]); len(b) > 0 {
		if _, err := conn.Write(b); err != nil {
			return fmt.Errorf("write to host: %w", err)
		}
	}
	if len(f.pending) > 0 {
		if err := f.send(conn, f.pending, f.pendingFlushes); err != nil {
			return err
		}
	}
	for {
		b := f.fr.pop(f, f.wbuf)
		if len(b.Buf) == 0 && len(b.Flushes) == 0 {
			select {
			case <-f.q.Ready():
				continue
			case err := <-dead:
				return err
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		if len(b.Buf) > 0 {
			if err := f.send(conn, b.Buf, b.Flushes); err != nil {
				return err // its markers unanswered: asked again behind what is resent
			}
		}
		if !f.fr.hostAnswers() && len(b.Flushes) > 0 {
			// Nobody on the other end answers: once the batch is written,
			// so is everything before its markers (a raw batch's payload
			// may come before them).
			f.answer(b.Flushes[len(b.Flushes)-1], 0, 0)
		}
	}
}

// send writes b, which holds whole frames (or, raw, one payload), with
// the flush requests of tickets among them. What did not go out whole is
// kept in pending for the next connection.
func (f *forwarder) send(conn net.Conn, b []byte, tickets []uint64) error {
	answers := f.fr.hostAnswers() && len(tickets) > 0
	if answers {
		// Asked before written: the answer may come before Write returns.
		f.mu.Lock()
		f.asked = append(f.asked, tickets...)
		f.mu.Unlock()
	}
	n, err := conn.Write(b)
	done, datagrams, bytes, flushes := f.fr.measure(b[:n], len(b))
	f.sent.Add(uint64(datagrams))
	f.sentBytes.Add(uint64(bytes))
	if err != nil {
		unsent := tickets[flushes:]
		if answers {
			// Not whole on the wire: this connection never answers them.
			f.mu.Lock()
			f.asked = f.asked[:len(f.asked)-len(unsent)]
			f.mu.Unlock()
		}
		f.pending = append(f.pending[:0], b[done:]...)
		f.pendingFlushes = append(f.pendingFlushes[:0], unsent...)
		return fmt.Errorf("write to host: %w", err)
	}
	f.pending = f.pending[:0]
	f.pendingFlushes = f.pendingFlushes[:0]
	return nil
}

// walkFrames measures the whole frames at the start of b.
func walkFrames(b []byte) (done, datagrams, bytes, flushes int) {
	for done+wire.FrameHeaderSize <= len(b) {
		size := int(binary.BigEndian.Uint32(b[done:]))
		ctl := size&wire.ControlSeq != 0 // v2's sequence frame: no datagram
		size &^= wire.ControlSeq
		if done+wire.FrameHeaderSize+size > len(b) {
			break
		}
		done += wire.FrameHeaderSize + size
		if ctl {
			continue
		}
		if size == 0 {
			flushes++
		} else {
			datagrams++
			bytes += size
		}
	}
	return done, datagrams, bytes, flushes
}

// readAnswers reads the host's side of the stream: flush answers in framed
// mode, nothing in raw mode. It returns when the stream ends.
func (f *forwarder) readAnswers(conn net.Conn) error {
	if !f.fr.hostAnswers() {
		_, err := io.Copy(io.Discard, conn)
		if err == nil {
			err = io.EOF
		}
		return err
	}
	// Buffered: confirmations that arrive together cost one read.
	r := bufio.NewReaderSize(conn, answerBuffer)
	var h [wire.FrameHeaderSize + 16]byte
	for {
		if _, err := io.ReadFull(r, h[:wire.FrameHeaderSize]); err != nil {
			return fmt.Errorf("read from host: %w", err)
		}
		f.heard.Store(true)
		switch n := binary.BigEndian.Uint32(h[:]); {
		case n == 0:
			t, err := f.takeAsked()
			if err != nil {
				return err
			}
			f.q.AckFlush(t)
			f.answer(t, 0, f.q.Stats().Acked)
		case n == wire.ControlSeq|8 && f.cfg.Framing == Framed:
			// A flush answer saying how much the host's endpoint has not
			// accepted.
			body := h[wire.FrameHeaderSize : wire.FrameHeaderSize+8]
			if _, err := io.ReadFull(r, body); err != nil {
				return fmt.Errorf("read from host: %w", err)
			}
			t, err := f.takeAsked()
			if err != nil {
				return err
			}
			f.q.AckFlush(t)
			f.answer(t, binary.BigEndian.Uint64(body), f.q.Stats().Acked)
		case (n == 8 || n == 16) && f.cfg.Framing == Framed:
			body := h[wire.FrameHeaderSize : wire.FrameHeaderSize+n]
			if _, err := io.ReadFull(r, body); err != nil {
				return fmt.Errorf("read from host: %w", err)
			}
			f.q.Ack(binary.BigEndian.Uint64(body))
			if n == 16 {
				f.noteHostDropped(binary.BigEndian.Uint64(body[8:]))
			}
		default:
			return wire.ProtocolErrorf("host sent a frame of %d bytes; a host only sends confirmations and flush answers", n)
		}
	}
}

// answerBuffer holds many confirmations and flush answers (12 to 20 bytes
// each).
const answerBuffer = 512

// framer is what differs between the framings, chosen once per forwarder.
type framer interface {
	// greet is what a new connection starts with.
	greet(f *forwarder, dst []byte) []byte
	// pop takes what the next write carries into buf[:0], and the
	// tickets of its flush requests into f.tickets.
	pop(f *forwarder, buf []byte) batch
	// measure says what of a write of want bytes, of which b went out,
	// went whole.
	measure(b []byte, want int) (done, datagrams, bytes, flushes int)
	// hostAnswers reports whether the host answers flush requests (not socat).
	hostAnswers() bool
}

// Framing is how a guest relay writes its stream.
type Framing uint8

// The framings.
const (
	Framed   Framing = iota // wire protocol v2: numbered frames, confirmed by the host
	FramedV1                // wire protocol v1, for hosts that speak no v2
	Raw                     // bare payloads, for a host that runs socat
)

func (f Framing) String() string {
	switch f {
	case FramedV1:
		return "v1"
	case Raw:
		return "raw"
	}
	return "framed"
}

func (f Framing) framer() framer {
	switch f {
	case FramedV1:
		return v1Framer{}
	case Raw:
		return rawFramer{}
	}
	return v2Framer{}
}

// queue is the queue the framing needs: v2 keeps what it sent until the
// host confirms it.
func (f Framing) queue(maxBytes int) *queue {
	if f == Framed {
		return newRetainingQueue(maxBytes)
	}
	return newQueue(maxBytes)
}

// v2Framer numbers datagrams: the hello says where this connection
// starts, everything unconfirmed is sent again, and a gap left by
// drop-oldest is announced with a sequence frame.
type v2Framer struct{}

func (v2Framer) greet(f *forwarder, dst []byte) []byte {
	// Flush requests not yet answered are asked again from the queue
	// (markers and an owed one), in order.
	f.mu.Lock()
	f.asked = f.asked[:0]
	f.mu.Unlock()
	f.pending, f.pendingFlushes = f.pending[:0], f.pendingFlushes[:0] // the queue still holds it
	f.wire = f.q.Rewind()
	return wire.AppendHelloV2(dst, f.cfg.Kind, f.sessionID, f.wire)
}

const seqFrameSize = wire.FrameHeaderSize + 8

func (v2Framer) pop(f *forwarder, buf []byte) batch {
	b := f.q.Pop(buf[seqFrameSize:seqFrameSize], f.tickets)
	f.tickets = b.Flushes // grown, maybe
	if b.Datagrams == 0 {
		return b
	}
	if b.FirstSeq != f.wire {
		wire.AppendSeq(buf[:0], b.FirstSeq)
		b.Buf = buf[:seqFrameSize+len(b.Buf)]
	}
	f.wire = b.FirstSeq + uint64(b.Datagrams)
	return b
}

func (v2Framer) measure(b []byte, _ int) (int, int, int, int) { return walkFrames(b) }
func (v2Framer) hostAnswers() bool                            { return true }

type v1Framer struct{}

func (v1Framer) greet(f *forwarder, dst []byte) []byte {
	// Flush requests the last connection took to its grave are asked again
	// first: they stay asked, now on this connection.
	f.mu.Lock()
	carried := len(f.asked)
	f.mu.Unlock()
	dst = wire.AppendHello(dst, f.cfg.Kind)
	for range carried {
		dst = wire.AppendFrame(dst, nil)
	}
	return dst
}
func (v1Framer) pop(f *forwarder, buf []byte) batch {
	b := f.q.Pop(buf[:0], f.tickets)
	f.tickets = b.Flushes
	return b
}
func (v1Framer) measure(b []byte, _ int) (int, int, int, int) { return walkFrames(b) }
func (v1Framer) hostAnswers() bool                            { return true }

// rawFramer writes bare payloads, one per write, as socat reads them.
type rawFramer struct{}

func (rawFramer) greet(*forwarder, []byte) []byte { return nil }
func (rawFramer) pop(f *forwarder, buf []byte) batch {
	b := f.q.PopPayload(buf[:0], f.tickets)
	f.tickets = b.Flushes
	return b
}
func (rawFramer) hostAnswers() bool { return false }
func (rawFramer) measure(b []byte, want int) (int, int, int, int) {
	if len(b) < want {
		return 0, 0, 0, 0 // a payload cut short is sent again whole
	}
	return len(b), 1, len(b), 0
}
