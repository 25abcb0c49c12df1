package roles

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"slices"

	"github.com/katatrace/katatrace/endpoint"
	"github.com/katatrace/katatrace/fdstore"
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

// predecessor is what the unit's previous process left this one.
type predecessor struct {
	conns []hostrelay.Adopted
	state *handoverState // nil: it crashed, or handed nothing
}

// openStore opens the unit's file descriptor store, if it has one, and
// takes what the previous process left in it.
func openStore(rc *RunContext, max int) (*fdstore.Store, predecessor, error) {
	files := fdstore.Stored(func(name string) bool { return hostrelay.StoredConn(name) || name == fdstore.StateName })
	store, err := fdstore.Open(max, len(files))
	if err != nil {
		return nil, predecessor{}, err
	}
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
		if store != nil {
			// Out at once: a crash of this process must not find it stale.
			_ = store.Forget(fdstore.StateName)
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
		conn, err := endpoint.FileConn(f)
		_ = f.Close()
		if err != nil {
			rc.Log.Warn("a stored connection could not be taken up; closed", "name", name, "err", err)
			if store != nil {
				_ = store.Forget(name)
			}
			continue
		}
		p.conns = append(p.conns, hostrelay.Adopted{Conn: conn, Name: name, State: states[name]})
	}
	return store, p, nil
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

// handOver stops srv and its sink for the unit's next process: the
// connections stay in the store, and their state and what the sink held go
// there in a memfd. It reports what it kept.
func handOver(ctx context.Context, rc *RunContext, store *fdstore.Store, srv *hostrelay.Server, out sink.Sink, to string) error {
	st, err := srv.Handover(ctx)
	state := handoverState{Version: handoverVersion, Role: rc.Role, Server: st, Sink: to}
	if h, ok := sink.Inner(out).(sink.Handing); ok {
		state.Held = h.Handover(ctx)
	}
	b, merr := json.Marshal(state)
	var f *os.File
	if merr == nil {
		f, merr = fdstore.WriteState(fdstore.StateName, b)
	}
	if merr == nil {
		merr = store.KeepFile(fdstore.StateName, f)
		_ = f.Close()
	}
	if merr != nil {
		rc.Log.Error("the state for the next process could not be stored: it takes the connections up as after a crash, and what the sink held is lost",
			"err", merr, "connections", len(st.Conns), "held_batches", len(state.Held))
		return merr
	}
	rc.Log.Info("handed over to the next process", "connections", len(st.Conns), "held_batches", len(state.Held),
		"state_bytes", len(b), "store", fmt.Sprintf("%d of %d", store.Len(), store.Max()))
	return err
}
