package roles

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"

	"github.com/katatrace/katatrace/handover"
)

// handing is a host role's side of --handover-socket: the store it keeps
// its sockets in, the offer waiting at the socket for a successor once
// the host serves, and what the stop does: hand over if a successor
// asked before it began, else drain.
type handing struct {
	store *handover.Store // nil: no --handover-socket

	mu    sync.Mutex
	o     *handover.Offer
	state atomic.Int32 // serving, asked or draining
}

const (
	serving  int32 = iota
	asked          // a successor waits: the stop hands over
	draining       // the stop began without one: it drains
)

// errSuccessor ends a host's run for a successor.
var errSuccessor = errors.New("a successor takes over")

// offer waits at path for a successor; one that asks stops the host
// (stop), which then hands over to it.
func (h *handing) offer(rc *RunContext, path string, stop context.CancelCauseFunc) {
	o, err := handover.NewOffer(path, rc.Role, rc.Log, func() {
		if h.state.CompareAndSwap(serving, asked) {
			rc.Log.Info("handing over to the successor at the handover socket", "path", path)
			stop(errSuccessor)
		}
	})
	if err != nil {
		rc.Log.Error("cannot wait at the handover socket: no next process can take over from this one, and this one's stop ends every guest's connection", "path", path, "err", err)
		return
	}
	h.mu.Lock()
	h.o = o
	h.mu.Unlock()
}

// successor decides, once, as the stop begins, whether it hands over.
func (h *handing) successor() bool {
	h.state.CompareAndSwap(serving, draining)
	return h.state.Load() == asked
}

// finish ends the handover side once the host stopped: a successor that
// asked gets everything (or the next that asks, until this process is
// stopped), and then this process waits for its stop, serving nothing:
// exiting on its own, it would be restarted beside its successor.
func (h *handing) finish(rc *RunContext) {
	defer h.store.Close()
	h.mu.Lock()
	o := h.o
	h.mu.Unlock()
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
	_ = h.store.Close() // the successor holds its own copies
	_ = o.Close()
	rc.Log.Info("handed over: this process serves nothing now (/readyz answers 503) and waits to be stopped")
	<-rc.Ctx.Done()
}
