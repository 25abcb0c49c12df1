package guestrelay

import (
	"context"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/katatrace/katatrace/wire"
)

// Relay is a guest relay at work: a forwarder sending to the host, fed from
// a datagram socket (and by Send) until Shutdown. Its order of stopping is
// what makes a clean stop lose nothing that was read: stop reading, take
// what was still waiting in the socket, close it, flush and wait for the
// host's answer, then stop sending.
type Relay struct {
	f        *forwarder
	pc       net.PacketConn
	drain    time.Duration
	plan     drainPlan // Shutdown's, set before stopRead
	stopRead context.CancelFunc
	readDone chan struct{}
	readErr  error // readFrom's, once readDone is closed
	stopSend context.CancelFunc
	sendDone chan struct{}
	once     sync.Once
	flushErr error
}

// StartRelay starts sending to the host and, when pc is not nil, reading
// datagrams from pc into the queue. drain, if positive, bounds further
// how long Shutdown spends reading what was waiting in pc.
func StartRelay(cfg Config, pc net.PacketConn, drain time.Duration) *Relay {
	r := &Relay{f: newForwarder(cfg), pc: pc, drain: drain, readDone: make(chan struct{}), sendDone: make(chan struct{})}
	var sendCtx, readCtx context.Context
	sendCtx, r.stopSend = context.WithCancel(context.Background())
	readCtx, r.stopRead = context.WithCancel(context.Background())
	go func() { defer close(r.sendDone); r.f.run(sendCtx) }()
	if pc == nil {
		close(r.readDone)
		return r
	}
	// The plan is written before readCtx ends, and read after.
	go func() {
		defer close(r.readDone)
		r.readErr = r.f.readFrom(readCtx, pc, func() drainPlan { return r.plan })
	}()
	return r
}

// ReadDone is closed once reading has stopped: by Shutdown, or because the
// socket failed (Err says why).
func (r *Relay) ReadDone() <-chan struct{} { return r.readDone }

// Err is the error that stopped reading early, once ReadDone is closed.
func (r *Relay) Err() error {
	select {
	case <-r.readDone:
		return r.readErr
	default:
		return nil
	}
}

// Shutdown stops reading, queues what was waiting in the socket when it
// began (not what keeps coming), closes it, and waits for the host to
// confirm everything queued; then it stops sending. ctx bounds all of it:
// reading takes at most half its time (and at most drain), the flush the
// rest; without a deadline, reading takes at most a minute. It returns
// the flush's error; later calls return the first one's.
func (r *Relay) Shutdown(ctx context.Context) error {
	r.once.Do(func() {
		began := time.Now()
		readFor := drainDefault
		if end, ok := ctx.Deadline(); ok {
			readFor = end.Sub(began) / 2
		}
		if r.drain > 0 {
			readFor = min(readFor, r.drain)
		}
		r.plan = drainPlan{began: began, end: began.Add(readFor), ctx: ctx}
		r.stopRead()
		<-r.readDone // every datagram waiting in the socket is queued
		if r.pc != nil {
			_ = r.pc.Close()
		}
		r.flushErr = r.f.Flush(ctx)
		r.stopSend()
		<-r.sendDone
	})
	return r.flushErr
}

// drainDefault bounds reading in a stop whose context has no deadline.
const drainDefault = time.Minute

// Inspect has fn see the datagrams read from the socket, on the reading
// goroutine, before they are queued (which it must not delay); nil stops
// it.
func (r *Relay) Inspect(fn func(ps [][]byte)) {
	if fn == nil {
		r.f.inspect.Store(nil)
		return
	}
	r.f.inspect.Store(&fn)
}

// Send queues one datagram for the host (the relay's own spans, say).
func (r *Relay) Send(p []byte) { r.f.Send(p) }

// SendBatch queues several datagrams at once.
func (r *Relay) SendBatch(ps [][]byte) { r.f.SendBatch(ps) }

// Flush waits until the host confirmed every datagram queued before it
// (see forwarder.Flush), or ctx ends.
func (r *Relay) Flush(ctx context.Context) error { return r.f.Flush(ctx) }

// Stats returns a snapshot of the relay's counters.
func (r *Relay) Stats() Stats { return r.f.Stats() }

// NotConnected names the first of rs not connected to its host, or nil:
// a guest process's readiness.
func NotConnected(rs ...*Relay) error {
	for _, r := range rs {
		if !r.f.connected.Load() {
			return fmt.Errorf("the %s relay is not connected to its host %s", r.Kind(), r.f.cfg.Target)
		}
	}
	return nil
}

// Kind is what the relay carries.
func (r *Relay) Kind() wire.Kind { return r.f.Kind() }
