package roles

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"

	"github.com/katatrace/katatrace/handover"
)

// handing is a host role's side of --handover-socket: the store it keeps
// its sockets in, what it took from a predecessor (until it serves it),
// the offer waiting at the socket for a successor once the host serves,
// and what the stop does: hand over if a successor asked for the stop,
// keep everything in place if what was taken is not served yet (the
// predecessor still holds it, for the next successor), else drain.
type handing struct {
	store *handover.Store // nil: no --handover-socket
	taken *handover.Taken // nil: nothing taken, or committed

	mu    sync.Mutex
	o     *handover.Offer
	state atomic.Int32 // serving, asked or draining
	given atomic.Bool  // a successor serves everything now
}

const (
	serving  int32 = iota
	asked          // a successor waits: the stop hands over
	draining       // the stop began without one: it drains
)

// errSuccessor ends a host's run for a successor.
var errSuccessor = errors.New("a successor takes over")

// ready is the host serving: what was taken is served from now on (the
// predecessor lets its copies go), and a successor may ask at path (stop
// ends the host for it).
func (h *handing) ready(rc *RunContext, path string, stop context.CancelCauseFunc) {
	// Bound first: the path is never without a process to ask.
	o, err := handover.NewOffer(path, rc.Role, rc.Log, func() error {
		if h.state.CompareAndSwap(serving, asked) {
			rc.Log.Info("handing over to the successor at the handover socket", "path", path)
			stop(errSuccessor)
		}
		if h.state.Load() == draining {
			return errors.New("this process is stopping without a successor: start afresh once it is gone")
		}
		return nil
	})
	if err != nil {
		rc.Log.Error("cannot wait at the handover socket: no next process can take over from this one, and this one's stop ends every guest's connection", "path", path, "err", err)
	}
	h.mu.Lock()
	h.o = o
	t := h.taken
	h.taken = nil
	h.mu.Unlock()
	if t != nil {
		if err := t.Commit(); err != nil {
			rc.Log.Warn("the predecessor did not hear that this process serves what it took: it keeps its copies until it is stopped", "err", err)
		}
	}
}

// successor decides, as the stop (ctx's end) begins, whether it hands
// over: to a successor that asked for this stop, or back where it came
// from when what was taken is not served yet.
func (h *handing) successor(ctx context.Context) bool {
	if h.state.CompareAndSwap(serving, draining) || context.Cause(ctx) != errSuccessor {
		h.state.Store(draining)
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
	if err := o.Give(rc.Ctx, h.store); err != nil {
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

// handedOver reports whether this process gave everything to a
// successor.
func (h *handing) handedOver() bool { return h.given.Load() }
