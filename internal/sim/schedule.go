package sim

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"time"
)

// plan is one seed's schedule: everything the simulation does and every
// fault it injects, drawn before it starts from a PCG seeded by the seed.
// What is drawn while it runs is drawn from streams of their own, keyed
// by what they are for (a connection's faults by its number, a guest's
// datagrams by the guest, a sink's verdict by the datagram): one draw
// more in one place moves nothing elsewhere.
type plan struct {
	seed   uint64
	length time.Duration // how long the clients send
	guests []guestPlan
	// The host: its flush timeout and the drain of its final stop;
	// restarts (each stops the host with its own drain, waits gap, and
	// starts a new one on the same address, with a new sink).
	flushTimeout, hostDrain time.Duration
	restarts                []restartPlan
	cutAll                  []time.Duration // every open connection cut at once
	// The sink and its endpoint.
	sinkWindows     []sinkWindow
	endpointWindows []endpointWindow
	latency         time.Duration // per request to the endpoint
	batch           int           // datagrams per request
	maxHeld         int           // the sink's queue, in datagrams
	retryFor        time.Duration // how long a request is retried while the endpoint is down
	// connFaults is the share of connections that get a fault.
	connFaults float64
	// stopWhileSending: the clients keep sending through the guests' stop.
	stopWhileSending bool
}

type guestPlan struct {
	queueBytes             int
	drain                  time.Duration // its stop's drain timeout
	backoffMin, backoffMax time.Duration
	slots                  int // its datagram socket's buffer, in datagrams
	phases                 []phase
	bursts                 []burst
	flushes                []flushPlan
	direct                 float64 // share of datagrams queued by Send (the relay's own), not read
}

// phase is a stretch of steady traffic; big is the share of large
// datagrams (8 KiB to 64 KiB).
type phase struct {
	from, to time.Duration
	rate     float64 // datagrams per second
	big      float64
}

// burst is n datagrams at once; direct ones go through Send, straight
// into the queue (the socket would drop most of a burst).
type burst struct {
	at     time.Duration
	n      int
	big    float64
	direct bool
}

type flushPlan struct{ at, timeout time.Duration }

type restartPlan struct{ at, gap, drain time.Duration }

type sinkMode int

const (
	sinkAccept  sinkMode = iota
	sinkStall            // each SendBatch waits stall first; a guest's flush waits out its timeout
	sinkRefuse           // every datagram refused
	sinkPartial          // a share of the datagrams refused
)

func (m sinkMode) String() string {
	return [...]string{"accept", "stall", "refuse", "partial"}[m]
}

type sinkWindow struct {
	from, to time.Duration
	mode     sinkMode
	stall    time.Duration
	share    float64
}

type endpointState int

const (
	endpointUp endpointState = iota
	endpointDown
	endpointRejecting
)

func (s endpointState) String() string { return [...]string{"up", "down", "rejecting"}[s] }

type endpointWindow struct {
	from, to time.Duration
	state    endpointState
}

// Streams of the seed's PCG.
const (
	streamPlan    = 1
	streamRelay   = 2          // the guest relays' own randomness (session, jitter)
	streamTraffic = 0x100      // + guest
	streamConn    = 0x10000000 // + connection number
)

func pick[T any](r *rand.Rand, vs ...T) T { return vs[r.IntN(len(vs))] }

// durationIn is a duration in [lo, hi).
func durationIn(r *rand.Rand, lo, hi time.Duration) time.Duration {
	return lo + time.Duration(r.Int64N(int64(hi-lo)))
}

func newPlan(seed uint64) *plan {
	r := rand.New(rand.NewPCG(seed, streamPlan))
	p := &plan{seed: seed, length: durationIn(r, 2*time.Second, 5*time.Second)}
	at := func() time.Duration { return durationIn(r, p.length/20, p.length*19/20) }
	for range 1 + r.IntN(2) {
		g := guestPlan{
			queueBytes: pick(r, 64<<10, 128<<10, 256<<10, 1<<20),
			drain:      pick(r, 100*time.Millisecond, 300*time.Millisecond, time.Second, 2*time.Second, 3*time.Second),
			backoffMin: pick(r, 5*time.Millisecond, 20*time.Millisecond, 100*time.Millisecond),
			slots:      pick(r, 16, 64, 256, 1024),
			direct:     pick(r, 0, 0, 0.05),
		}
		g.backoffMax = g.backoffMin * pick[time.Duration](r, 1, 4, 10, 20)
		cuts := []time.Duration{0, p.length}
		for range r.IntN(4) {
			cuts = append(cuts, at())
		}
		sortDurations(cuts)
		for i := range len(cuts) - 1 {
			g.phases = append(g.phases, phase{from: cuts[i], to: cuts[i+1],
				rate: pick[float64](r, 0, 20, 100, 200, 400), big: pick(r, 0, 0.01, 0.02, 0.05)})
		}
		for range r.IntN(4) {
			g.bursts = append(g.bursts, burst{at: at(), n: pick(r, 20, 100, 300), big: pick(r, 0, 0.05, 0.15), direct: r.IntN(2) == 0})
		}
		for range r.IntN(6) {
			g.flushes = append(g.flushes, flushPlan{at: at(), timeout: pick(r, 50*time.Millisecond, 300*time.Millisecond, time.Second, 2500*time.Millisecond, 5*time.Second)})
		}
		p.guests = append(p.guests, g)
	}
	p.flushTimeout = pick(r, 100*time.Millisecond, 500*time.Millisecond, 2*time.Second)
	p.hostDrain = pick(r, 100*time.Millisecond, 500*time.Millisecond, time.Second, 3*time.Second)
	for range pick(r, 0, 0, 0, 0, 1, 1, 1, 2, 2, 3) {
		p.restarts = append(p.restarts, restartPlan{at: at(),
			gap:   pick(r, 0, 20*time.Millisecond, 300*time.Millisecond, 2*time.Second),
			drain: pick(r, 50*time.Millisecond, 300*time.Millisecond, time.Second, 3*time.Second)})
	}
	for range pick(r, 0, 0, 1, 2) {
		p.cutAll = append(p.cutAll, at())
	}
	for range pick(r, 0, 0, 1, 2, 3) {
		w := sinkWindow{from: at(), mode: pick(r, sinkStall, sinkRefuse, sinkPartial)}
		w.to = w.from + pick(r, 50*time.Millisecond, 500*time.Millisecond, 2*time.Second)
		w.stall = pick(r, 10*time.Millisecond, 200*time.Millisecond, time.Second, 3*time.Second)
		w.share = 0.1 + 0.6*r.Float64()
		p.sinkWindows = append(p.sinkWindows, w)
	}
	for range pick(r, 0, 0, 1, 2) {
		w := endpointWindow{from: at(), state: pick(r, endpointDown, endpointDown, endpointRejecting)}
		w.to = w.from + pick(r, 100*time.Millisecond, time.Second, 4*time.Second)
		p.endpointWindows = append(p.endpointWindows, w)
	}
	p.latency = pick(r, 0, time.Millisecond, 5*time.Millisecond, 20*time.Millisecond, 50*time.Millisecond)
	p.batch = pick(r, 1, 8, 64)
	p.maxHeld = pick(r, 20, 200, 5000)
	p.retryFor = pick(r, 300*time.Millisecond, 2*time.Second, 10*time.Second)
	p.connFaults = pick(r, 0, 0.1, 0.3, 0.6)
	p.stopWhileSending = r.IntN(2) == 0
	return p
}

func sortDurations(ds []time.Duration) {
	for i := 1; i < len(ds); i++ {
		for j := i; j > 0 && ds[j] < ds[j-1]; j-- {
			ds[j], ds[j-1] = ds[j-1], ds[j]
		}
	}
}

// sinkAt is the sink's mode at t (the first window holding t).
func (p *plan) sinkAt(t time.Duration) sinkWindow {
	for _, w := range p.sinkWindows {
		if t >= w.from && t < w.to {
			return w
		}
	}
	return sinkWindow{mode: sinkAccept}
}

func (p *plan) endpointAt(t time.Duration) endpointState {
	for _, w := range p.endpointWindows {
		if t >= w.from && t < w.to {
			return w.state
		}
	}
	return endpointUp
}

// rateAt is the traffic of phase at t, and whether t is past the plan.
func (g *guestPlan) phaseAt(t time.Duration) phase {
	for _, ph := range g.phases {
		if t >= ph.from && t < ph.to {
			return ph
		}
	}
	return g.phases[len(g.phases)-1]
}

// connPlan is a connection's buffer and faults, drawn from its own
// stream.
type connPlan struct {
	size               int
	upCut, downCut     int64
	upStall, downStall int64
	stallFor           time.Duration
	discard            bool
}

func (p *plan) conn(key uint64) connPlan {
	r := rand.New(rand.NewPCG(p.seed, streamConn+key))
	c := connPlan{size: pick(r, 1<<10, 8<<10, 64<<10, 1<<20), upCut: -1, downCut: -1, upStall: -1, downStall: -1}
	if r.Float64() >= p.connFaults {
		return c
	}
	c.discard = r.IntN(2) == 0
	c.stallFor = pick(r, 10*time.Millisecond, 200*time.Millisecond, time.Second, 4*time.Second)
	switch r.IntN(4) {
	case 0: // anywhere in the first frames, the hello included, or further
		c.upCut = pick(r, r.Int64N(64), r.Int64N(4<<10), r.Int64N(1<<20))
	case 1: // in the host's confirmations and answers
		c.downCut = r.Int64N(2000)
	case 2:
		c.upStall = r.Int64N(1 << 20)
	case 3: // the host reads, and its answers do not arrive
		c.downStall = r.Int64N(2000)
	}
	return c
}

func (c connPlan) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "buffer %d", c.size)
	if c.upCut >= 0 {
		fmt.Fprintf(&b, ", cut at guest byte %d", c.upCut)
	}
	if c.downCut >= 0 {
		fmt.Fprintf(&b, ", cut at host byte %d", c.downCut)
	}
	if c.upStall >= 0 {
		fmt.Fprintf(&b, ", stall %v at guest byte %d", c.stallFor, c.upStall)
	}
	if c.downStall >= 0 {
		fmt.Fprintf(&b, ", stall %v at host byte %d", c.stallFor, c.downStall)
	}
	if c.discard && (c.upCut >= 0 || c.downCut >= 0) {
		b.WriteString(" (buffered bytes lost)")
	}
	return b.String()
}

// String says the plan in a few lines, for a failing seed's report.
func (p *plan) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "length %v; host flush timeout %v, final drain %v; endpoint latency %v, batch %d, sink queue %d, retry %v; connection faults %.0f%%; stop while sending %v\n",
		p.length, p.flushTimeout, p.hostDrain, p.latency, p.batch, p.maxHeld, p.retryFor, 100*p.connFaults, p.stopWhileSending)
	for i, g := range p.guests {
		fmt.Fprintf(&b, "guest %d: queue %d, drain %v, backoff %v-%v, socket %d, direct %.2f\n", i, g.queueBytes, g.drain, g.backoffMin, g.backoffMax, g.slots, g.direct)
		for _, ph := range g.phases {
			fmt.Fprintf(&b, "  %v-%v: %v/s, %.0f%% large\n", ph.from, ph.to, ph.rate, 100*ph.big)
		}
		for _, bu := range g.bursts {
			fmt.Fprintf(&b, "  burst at %v: %d (%.0f%% large, direct %v)\n", bu.at, bu.n, 100*bu.big, bu.direct)
		}
		for _, f := range g.flushes {
			fmt.Fprintf(&b, "  flush at %v, timeout %v\n", f.at, f.timeout)
		}
	}
	for _, r := range p.restarts {
		fmt.Fprintf(&b, "host restart at %v: drain %v, down %v\n", r.at, r.drain, r.gap)
	}
	for _, c := range p.cutAll {
		fmt.Fprintf(&b, "every connection cut at %v\n", c)
	}
	for _, w := range p.sinkWindows {
		fmt.Fprintf(&b, "sink %v %v-%v (stall %v, share %.2f)\n", w.mode, w.from, w.to, w.stall, w.share)
	}
	for _, w := range p.endpointWindows {
		fmt.Fprintf(&b, "endpoint %v %v-%v\n", w.state, w.from, w.to)
	}
	return b.String()
}
