package sim

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing/synctest"
	"time"

	"github.com/katatrace/katatrace/endpoint"
	"github.com/katatrace/katatrace/guestrelay"
	"github.com/katatrace/katatrace/hostrelay"
	"github.com/katatrace/katatrace/wire"
)

// world is one run of the simulation: the guests, the host (one process
// after another), the endpoint, and the records the checks read. It runs
// inside a synctest bubble.
type world struct {
	plan *plan
	// sabotage, when set, breaks the simulation on purpose (see
	// TestChecksCatchSabotage): the checks must catch it.
	sabotage string
	t0       time.Time
	logs     *logRing
	log      *slog.Logger
	net      *network

	guests []*simGuest
	hosts  []*hostGen

	mu sync.Mutex
	// events is the run's story, for a failing seed's report.
	events []string
	// faults are the spells the host was not healthy: a connection cut or
	// stalled, the host down, its sink not taking everything.
	faults []interval
	sizes  map[uint64]int // every datagram made, by id
	// What became of each datagram on the host's side: handed to a sink
	// (times), refused by one (times; refusals in all), lost by one (the
	// last reason), taken by the endpoint (times).
	handedN  map[uint64]int
	handedBy map[uint64]int // the host that last handed it on
	// handedAgain counts datagrams a host handed on that it had handed
	// on already (a guest's resend it did not take for a duplicate).
	handedAgain int
	refusedN    map[uint64]int
	refusals    int
	lostBy      map[uint64]loss
	got         map[uint64]int
	arrivals    map[uint64]int // SendBatch calls that carried it, for keyed draws
	bad         []string       // datagrams not whole, or unknown
	conflicts   []string       // a session's number carrying two datagrams
	// The wire, as the taps saw it: per v2 session, the datagram each
	// number carried (as the host read it) and the highest confirmation
	// the guest read; per guest, the flush answers it read.
	seqs map[uint64]map[uint64]uint64
	acks map[uint64]uint64
	// skipped are the numbers a session's guest moved past unconfirmed
	// (a hello's first number above its last confirmation, or a
	// sequence frame): dropped by the guest, which counts them; the host
	// confirms them as dropped.
	skipped map[uint64][]span
	answers map[int]int

	taps     []*connTap // per connection, in order
	failures []failure
}

// span is the numbers [from, to).
type span struct{ from, to uint64 }

// loss is why a sink lost a datagram, and which host's it was.
type loss struct {
	why string
	gen int
}

type interval struct {
	from, to time.Time
	what     string
}

type failure struct{ invariant, msg string }

// hostAddr is where the host listens and the guests dial.
const hostAddr = addr("host")

func newWorld(seed uint64) *world {
	w := &world{plan: newPlan(seed), t0: time.Now(), logs: &logRing{max: 400},
		sizes: map[uint64]int{}, handedN: map[uint64]int{}, handedBy: map[uint64]int{}, refusedN: map[uint64]int{}, lostBy: map[uint64]loss{},
		got: map[uint64]int{}, arrivals: map[uint64]int{}, seqs: map[uint64]map[uint64]uint64{},
		acks: map[uint64]uint64{}, skipped: map[uint64][]span{}, answers: map[int]int{}}
	w.log = slog.New(slog.NewTextHandler(w.logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	w.net = &network{listeners: map[addr]*listener{}, open: w.openConn}
	for _, sw := range w.plan.sinkWindows {
		w.faults = append(w.faults, interval{w.t0.Add(sw.from), w.t0.Add(sw.to), "sink " + sw.mode.String()})
	}
	return w
}

// since is the virtual time since the run began.
func (w *world) since() time.Duration { return time.Since(w.t0) }

func (w *world) event(format string, args ...any) {
	msg := fmt.Sprintf("%8v  ", w.since().Round(time.Microsecond)) + fmt.Sprintf(format, args...)
	w.mu.Lock()
	w.events = append(w.events, msg)
	w.mu.Unlock()
}

func (w *world) fail(invariant, format string, args ...any) {
	w.mu.Lock()
	w.failures = append(w.failures, failure{invariant, fmt.Sprintf(format, args...)})
	w.mu.Unlock()
}

// unhealthy notes that the host is not healthy from now for d.
func (w *world) unhealthy(what string, d time.Duration) {
	now := time.Now()
	w.mu.Lock()
	w.faults = append(w.faults, interval{now, now.Add(d), what})
	w.mu.Unlock()
}

// healthy reports whether no fault touched [from, to].
func (w *world) healthy(from, to time.Time) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, f := range w.faults {
		if !f.from.After(to) && !f.to.Before(from) {
			return false
		}
	}
	return true
}

// openConn makes the n-th connection: its buffer and faults, drawn from
// its own stream, and the taps that read the protocol off it.
func (w *world) openConn(n int, key uint64, from, to addr) *pipe {
	cp := w.plan.conn(key)
	p := newPipe(n, cp.size)
	p.key = key
	p.up.cutAt, p.down.cutAt = cp.upCut, cp.downCut
	p.up.stallAt, p.down.stallAt = cp.upStall, cp.downStall
	p.up.stallFor, p.down.stallFor = cp.stallFor, cp.stallFor
	if w.sabotage == "wire-flips" {
		p.up.corruptAt = 3000 + int64(n)*977
	}
	p.onFault = func(p *pipe, what string, d time.Duration) {
		w.unhealthy(fmt.Sprintf("connection %d: %s", p.id, what), d)
		w.event("connection %d: %s %v", p.id, what, d)
	}
	guest, _, _ := strings.Cut(string(from), ":")
	t := &connTap{w: w, id: n, guest: -1}
	w.mu.Lock()
	w.taps = append(w.taps, t)
	w.mu.Unlock()
	fmt.Sscanf(guest, "guest%d", &t.guest)
	p.up.tap, p.down.tap = t.fromGuest, t.fromHost
	w.event("connection %d from %s: %s", n, from, cp)
	return p
}

// simGuest is one guest: its relay, its datagram socket and its client.
type simGuest struct {
	i     int
	plan  guestPlan
	name  string
	pc    *packetSource
	relay *guestrelay.Relay
	// started is relay, for its own dials (which may come before
	// StartRelay returns).
	started atomic.Pointer[guestrelay.Relay]

	mu   sync.Mutex
	sent []uint64 // queued by Send, in order
	next uint64
	// conns are the guest's connections, with when each opened and how
	// many datagrams its queue had dropped by then.
	conns    []guestConn
	stopping atomic.Bool
	stopCh   chan struct{} // closed: the client stops
	client   chan struct{} // closed when the client is done
	flushes  []flushRec
	stop     stopRec
}

type guestConn struct {
	id      int
	at      time.Time
	dropped uint64
}

type flushRec struct {
	start, end time.Time
	timeout    time.Duration
	err        error
	before     guestrelay.Stats
	after      guestrelay.Stats
	asked      int // flush answers the guest read during it
}

type stopRec struct {
	start, end, readDone time.Time
	err                  error
	stats                guestrelay.Stats
}

func (w *world) startGuest(i int) *simGuest {
	gp := w.plan.guests[i]
	g := &simGuest{i: i, plan: gp, name: fmt.Sprintf("guest%d", i), stopCh: make(chan struct{}), client: make(chan struct{})}
	g.pc = newPacketSource(g.name+":6831", gp.slots)
	g.pc.miscount = w.sabotage == "socket-miscounts"
	g.relay = guestrelay.StartRelay(guestrelay.Config{
		Kind:       wire.KindJaeger,
		Framing:    guestrelay.Framed,
		Dial:       func(ctx context.Context) (net.Conn, error) { return w.dial(ctx, g) },
		Target:     "sim://" + string(hostAddr),
		QueueBytes: gp.queueBytes,
		BackoffMin: gp.backoffMin,
		BackoffMax: gp.backoffMax,
		Logger:     w.log.With("guest", i),
		Rand:       rand.New(rand.NewPCG(w.plan.seed, streamRelay+uint64(i))),
	}, g.pc, gp.drain)
	g.started.Store(g.relay)
	return g
}

// dial is a guest relay's dial: it notes the connection and how many
// datagrams the guest had dropped by then.
func (w *world) dial(ctx context.Context, g *simGuest) (net.Conn, error) {
	var dropped uint64
	if r := g.started.Load(); r != nil {
		dropped = r.Stats().Queue.Dropped
	}
	c, err := w.net.dial(ctx, g.name, hostAddr)
	if err != nil {
		return nil, err
	}
	_, n, _ := strings.Cut(c.LocalAddr().String(), ":")
	id, _ := strconv.Atoi(n)
	g.mu.Lock()
	g.conns = append(g.conns, guestConn{id, time.Now(), dropped})
	g.mu.Unlock()
	return c, nil
}

// hostGen is one host process: a hostrelay.Host (as the roles run it),
// its server and its sink, on hostAddr.
type hostGen struct {
	gen    int
	host   *hostrelay.Host
	srv    *hostrelay.Server
	sink   *simSink
	drain  time.Duration
	end    context.CancelFunc
	served chan error
	stats  hostrelay.ServerStats
	// stopped is the spell of its stop.
	stopFrom, stopTo time.Time
}

// simFrom is the host's one From: its listener is the simulation's.
var simFrom = func() endpoint.Addr {
	a, err := endpoint.ParseAddr("unix:///sim/" + string(hostAddr))
	if err != nil {
		panic(err)
	}
	return a
}()

// startHost starts host generation gen as the host roles do
// (hostrelay.Host), with the drain timeout its stop will have.
func (w *world) startHost(gen int, drain time.Duration) *hostGen {
	h := &hostGen{gen: gen, sink: newSimSink(w, gen), drain: drain, served: make(chan error, 1)}
	h.host = hostrelay.NewHost(hostrelay.HostConfig{
		Server: hostrelay.ServerConfig{Kind: wire.KindJaeger, Sink: h.sink, FlushTimeout: w.plan.flushTimeout,
			MaxConnsPerGuest: 1000},
		From: []endpoint.Addr{simFrom}, To: "sim", DrainTimeout: drain,
		Listen: func(endpoint.Addr) (net.Listener, error) {
			ln, err := w.net.listen(hostAddr)
			if err != nil {
				panic(fmt.Sprintf("host %d: %v", gen, err)) // the last one closed its listener: a bug of the simulation
			}
			return ln, nil
		},
		Watched: func(endpoint.Addr) bool { return false },
		Logger:  w.log.With("host", gen),
	})
	h.srv = h.host.Server()
	var ctx context.Context
	ctx, h.end = context.WithCancel(context.Background())
	listening := make(chan struct{})
	go func() { h.served <- h.host.Run(ctx) }()
	go func() {
		for h.host.Ready() != nil {
			time.Sleep(time.Millisecond)
		}
		close(listening)
	}()
	<-listening
	w.hosts = append(w.hosts, h)
	w.event("host %d serving", gen)
	return h
}

// stopHost stops a host as its role does (its Run's context ends): the
// stop reads what was waiting, then the sink closes, all within its drain
// timeout. It checks the bound, and that nothing of that host is left
// running.
func (w *world) stopHost(h *hostGen) {
	start := time.Now()
	w.event("host %d stopping (drain %v)", h.gen, h.drain)
	h.end()
	err := <-h.served
	took := time.Since(start)
	h.stopFrom, h.stopTo = start, time.Now()
	w.event("host %d stopped in %v: %v", h.gen, took, err)
	if took > h.drain {
		w.fail("host-stop-overran", "host %d's stop took %v, its drain timeout is %v", h.gen, took, h.drain)
	}
	if err != nil {
		w.fail("host-serve-failed", "host %d: Run: %v", h.gen, err)
	}
	synctest.Wait() // whatever is left of it is blocked now, or gone
	if left := leftRunning("katatrace/hostrelay.", "sim.(*simSink)"); len(left) > 0 {
		w.fail("host-stop-left-running", "host %d stopped, and %d of its goroutines are still there:\n%s", h.gen, len(left), strings.Join(left, "\n"))
	}
	h.stats = h.srv.Stats()
}

// run is one seed's simulation, inside a bubble: it returns once
// everything stopped, with the checks' failures in w.failures.
func run(seed uint64, sabotage string) *world {
	w := newWorld(seed)
	w.sabotage = sabotage
	p := w.plan
	for i := range p.guests {
		w.guests = append(w.guests, w.startGuest(i))
	}
	// Each host generation's drain timeout: that of the restart that
	// stops it, the last one's the end's.
	byTime := slices.Clone(p.restarts)
	sort.SliceStable(byTime, func(i, j int) bool { return byTime[i].at < byTime[j].at })
	var drains []time.Duration
	for _, r := range byTime {
		drains = append(drains, r.drain)
	}
	drains = append(drains, p.hostDrain)
	host := w.startHost(0, drains[0])
	var flushes sync.WaitGroup
	for _, g := range w.guests {
		go w.client(g)
		for _, fp := range g.plan.flushes {
			flushes.Go(func() { w.flush(g, fp) })
		}
	}

	// The host's faults, in time order: restarts and cuts.
	type action struct {
		at      time.Duration
		restart *restartPlan
	}
	var actions []action
	for i := range p.restarts {
		actions = append(actions, action{p.restarts[i].at, &p.restarts[i]})
	}
	for _, at := range p.cutAll {
		actions = append(actions, action{at: at})
	}
	sort.SliceStable(actions, func(i, j int) bool { return actions[i].at < actions[j].at })
	for _, a := range actions {
		sleepUntil(w.t0.Add(a.at))
		if a.restart == nil {
			w.event("every connection cut")
			for _, c := range w.net.all() {
				if c.closed() {
					continue
				}
				c.cut(w.keyed(c.key, 0xfe) < 0.5, "cut with every other")
			}
			continue
		}
		down := time.Now()
		w.stopHost(host)
		time.Sleep(a.restart.gap)
		host = w.startHost(host.gen+1, drains[host.gen+1])
		w.mu.Lock()
		w.faults = append(w.faults, interval{down, time.Now(), fmt.Sprintf("host %d restarting", host.gen-1)})
		w.mu.Unlock()
	}

	sleepUntil(w.t0.Add(p.length))
	if !p.stopWhileSending {
		w.stopClients()
	}
	var stops sync.WaitGroup
	for _, g := range w.guests {
		stops.Go(func() { w.stopGuest(g) })
	}
	stops.Wait()
	w.stopClients()
	flushes.Wait()
	w.stopHost(host)
	synctest.Wait()
	if left := leftRunning(); len(left) > 0 {
		w.fail("left-running", "after every stop, %d goroutines are still there:\n%s", len(left), strings.Join(left, "\n"))
	}
	w.check()
	return w
}

func sleepUntil(t time.Time) {
	if d := time.Until(t); d > 0 {
		time.Sleep(d)
	}
}

func (w *world) stopClients() {
	for _, g := range w.guests {
		select {
		case <-g.stopCh:
		default:
			close(g.stopCh)
		}
		<-g.client
	}
}

// client sends the guest's traffic: each phase's rate in steps of tick,
// and the bursts, until stopped (after the plan's length, at the last
// phase's rate, or at least 200/s: a stop while sending).
func (w *world) client(g *simGuest) {
	defer close(g.client)
	r := rand.New(rand.NewPCG(w.plan.seed, streamTraffic+uint64(g.i)))
	const tick = 10 * time.Millisecond
	var owed float64
	bursts := append([]burst(nil), g.plan.bursts...)
	sort.Slice(bursts, func(i, j int) bool { return bursts[i].at < bursts[j].at })
	for t := time.Duration(0); ; t += tick {
		select {
		case <-g.stopCh:
			return
		case <-time.After(time.Until(w.t0.Add(t))):
		}
		ph := g.plan.phaseAt(t)
		rate := ph.rate
		if t >= w.plan.length {
			rate = max(rate, 200)
		}
		owed += rate * tick.Seconds()
		for ; owed >= 1; owed-- {
			w.send(g, r, ph.big, r.Float64() < g.plan.direct)
		}
		for len(bursts) > 0 && bursts[0].at < t+tick {
			b := bursts[0]
			bursts = bursts[1:]
			w.event("guest %d: burst of %d", g.i, b.n)
			for range b.n {
				w.send(g, r, b.big, b.direct)
			}
		}
	}
}

// send makes one datagram and offers it to the guest's socket, or queues
// it with Send.
func (w *world) send(g *simGuest, r *rand.Rand, big float64, direct bool) {
	var size int
	switch x := r.Float64(); {
	case x < 0.002:
		size = wire.MaxDatagram + 1 // refused by the relay, counted
	case x < big:
		size = 8<<10 + r.IntN(wire.MaxDatagram-8<<10+1)
	default:
		size = 20 + r.IntN(1500)
	}
	g.mu.Lock()
	g.next++
	id := datagramID(g.i, g.next)
	g.mu.Unlock()
	w.mu.Lock()
	w.sizes[id] = size
	w.mu.Unlock()
	p := makeDatagram(id, size)
	if !direct {
		g.pc.offer(p)
		return
	}
	if g.stopping.Load() {
		release(p)
		return // the relay's own spans end with it
	}
	g.relay.Send(p)
	release(p)
	g.mu.Lock()
	g.sent = append(g.sent, id)
	g.mu.Unlock()
}

// snapshot is every datagram the guest's relay has queued so far.
func (g *simGuest) snapshot() []uint64 {
	g.mu.Lock()
	sent := g.sent[:len(g.sent):len(g.sent)]
	g.mu.Unlock()
	return append(g.pc.snapshot(), sent...)
}

func (w *world) flush(g *simGuest, fp flushPlan) {
	sleepUntil(w.t0.Add(fp.at))
	if g.stopping.Load() {
		return
	}
	snap := g.snapshot()
	rec := flushRec{start: time.Now(), timeout: fp.timeout, before: g.relay.Stats()}
	asked := w.answersOf(g)
	ctx, cancel := context.WithTimeout(context.Background(), fp.timeout)
	rec.err = g.relay.Flush(ctx)
	cancel()
	rec.end, rec.after = time.Now(), g.relay.Stats()
	rec.asked = w.answersOf(g) - asked
	w.event("guest %d: flush (timeout %v) in %v: %v; answers %d-%d, connected %v", g.i, fp.timeout, rec.end.Sub(rec.start), rec.err, rec.before.FlushesAnswered, rec.after.FlushesAnswered, rec.before.Connected)
	if rec.err == nil {
		w.checkReceipt(g, snap, rec.after, rec.asked, "flush at "+rec.start.Sub(w.t0).String())
	}
	g.mu.Lock()
	g.flushes = append(g.flushes, rec)
	g.mu.Unlock()
}

// stopGuest stops a guest's relay as its role does, with its drain
// timeout, and checks the bound.
func (w *world) stopGuest(g *simGuest) {
	g.stopping.Store(true)
	snapDone := make(chan struct{})
	go func() {
		<-g.relay.ReadDone()
		g.stop.readDone = time.Now()
		close(snapDone)
	}()
	g.stop.start = time.Now()
	w.event("guest %d stopping (drain %v)", g.i, g.plan.drain)
	asked := w.answersOf(g)
	ctx, cancel := context.WithTimeout(context.Background(), g.plan.drain)
	g.stop.err = g.relay.Shutdown(ctx)
	cancel()
	g.stop.end = time.Now()
	<-snapDone
	g.stop.stats = g.relay.Stats()
	took := g.stop.end.Sub(g.stop.start)
	w.event("guest %d stopped in %v (reading for %v): %v; flushes answered %d, connects %d", g.i, took, g.stop.readDone.Sub(g.stop.start), g.stop.err, g.stop.stats.FlushesAnswered, g.stop.stats.Connects)
	if took > g.plan.drain {
		w.fail("guest-stop-overran", "guest %d's stop took %v, its drain timeout is %v (reading took %v)", g.i, took, g.plan.drain, g.stop.readDone.Sub(g.stop.start))
	}
	if g.stop.err == nil {
		g.mu.Lock()
		all := append(append([]uint64(nil), g.pc.read...), g.sent...)
		g.mu.Unlock()
		w.checkReceipt(g, all, g.stop.stats, w.answersOf(g)-asked, "stop")
	}
}

// answersOf counts the flush answers g's relay has read, on all its
// connections.
func (w *world) answersOf(g *simGuest) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.answers[g.i]
}

// The records the sink and the taps keep.

// arrivedLocked notes a datagram reaching a sink (of host gen), checks
// it is whole and known, and returns its id; w.mu is held.
func (w *world) arrivedLocked(p []byte, gen int) uint64 {
	id := idOf(p)
	w.arrivals[id]++
	if size, ok := w.sizes[id]; !ok || !intact(p, size) {
		w.bad = append(w.bad, fmt.Sprintf("host %d's sink got %d bytes, id %#x: not a whole datagram of the simulation", gen, len(p), id))
	}
	return id
}

func (w *world) accepted(batch []heldDatagram) {
	w.mu.Lock()
	for _, d := range batch {
		w.got[d.id]++
	}
	w.mu.Unlock()
}

// connTap reads the protocol off a connection: the guest's side as the
// host read it, the host's as the guest read it.
type connTap struct {
	w       *world
	mu      sync.Mutex
	up      []byte // the guest's bytes not yet parsed
	down    []byte
	id      int // the connection's
	guest   int
	hello   bool
	session uint64
	next    uint64
	// What crossed: datagram frames and flush requests the host read,
	// confirmations and flush answers the guest read.
	frames, requests, acks, answers int
}

func (t *connTap) fromGuest(b []byte) {
	t.mu.Lock()
	defer t.mu.Unlock()
	rest := b // parsed in place, what is left of a frame kept
	if len(t.up) > 0 {
		t.up = append(t.up, b...)
		rest = t.up
	}
	defer func() { t.up = append(t.up[:0], rest...) }()
	for {
		if !t.hello {
			if len(rest) < wire.HelloSize+wire.HelloV2Extra {
				return
			}
			h, _, err := wire.ReadHello(bufio.NewReader(bytes.NewReader(rest)))
			if err != nil || h.Version != wire.Version2 {
				t.w.fail("protocol", "a guest's hello did not parse as v2: %v", err)
				rest = nil
				return
			}
			t.hello, t.session, t.next = true, h.Session, h.First
			if t.w.sabotage == "tap-misnumbers" {
				t.next += uint64(t.id % 2) // every other connection one off: what is sent again carries other numbers
			}
			t.w.mu.Lock()
			if acked := max(t.w.acks[h.Session], 1); h.First > acked {
				t.w.skipped[h.Session] = append(t.w.skipped[h.Session], span{acked, h.First})
			}
			t.w.mu.Unlock()
			rest = rest[wire.HelloSize+wire.HelloV2Extra:]
			continue
		}
		body, ctl, ok := nextFrame(&rest)
		switch {
		case !ok:
			return
		case ctl:
			next := be64(body)
			t.w.mu.Lock()
			t.w.skipped[t.session] = append(t.w.skipped[t.session], span{t.next, next})
			t.w.mu.Unlock()
			t.next = next
		case len(body) > 0:
			t.w.sent(t.session, t.next, body)
			t.next++
			t.frames++
		default:
			t.requests++
		}
	}
}

func (t *connTap) fromHost(b []byte) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.down = append(t.down, b...)
	rest := t.down
	defer func() { t.down = t.down[:copy(t.down, rest)] }()
	for {
		body, ctl, ok := nextFrame(&rest)
		if !ok {
			return
		}
		t.w.mu.Lock()
		switch n := len(body); {
		case ctl || n == 0:
			t.w.answers[t.guest]++
			t.answers++
		case n == 8 || n == 16:
			t.acks++
			t.w.acks[t.session] = max(t.w.acks[t.session], be64(body))
		}
		t.w.mu.Unlock()
	}
}

// nextFrame takes the next whole frame off b: its body, and whether it
// is a control frame.
func nextFrame(b *[]byte) (body []byte, ctl, ok bool) {
	if len(*b) < wire.FrameHeaderSize {
		return nil, false, false
	}
	n := binary.BigEndian.Uint32(*b)
	ctl = n&wire.ControlSeq != 0
	size := int(n &^ wire.ControlSeq)
	if len(*b) < wire.FrameHeaderSize+size {
		return nil, false, false
	}
	body = (*b)[wire.FrameHeaderSize : wire.FrameHeaderSize+size]
	*b = (*b)[wire.FrameHeaderSize+size:]
	return body, ctl, true
}

// sent notes datagram number seq of session, as the host read it (its
// bytes are checked where a sink gets them).
func (w *world) sent(session, seq uint64, p []byte) {
	id := idOf(p)
	w.mu.Lock()
	defer w.mu.Unlock()
	if size, ok := w.sizes[id]; !ok || len(p) != size {
		w.bad = append(w.bad, fmt.Sprintf("the host read a frame of %d bytes, id %#x, that is not a datagram of the simulation", len(p), id))
		return
	}
	m := w.seqs[session]
	if m == nil {
		m = map[uint64]uint64{}
		w.seqs[session] = m
	}
	if old, ok := m[seq]; ok && old != id {
		w.conflicts = append(w.conflicts, fmt.Sprintf("session %#x number %d carried %#x, and later %#x", session, seq, old, id))
	}
	m[seq] = id
}

func be64(b []byte) uint64 { return binary.BigEndian.Uint64(b) }

// logRing keeps the last lines the relays logged.
type logRing struct {
	mu    sync.Mutex
	lines []string
	max   int
}

func (l *logRing) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, strings.TrimRight(string(p), "\n"))
	if len(l.lines) > l.max {
		l.lines = l.lines[len(l.lines)-l.max:]
	}
	return len(p), nil
}
