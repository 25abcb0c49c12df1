package roles

import (
	"context"
	"errors"
	"net"
	"time"

	"github.com/katatrace/katatrace/netx"
	"github.com/katatrace/katatrace/systemd"
)

// fromGuestHelp is the help of a host relay's --from.
const fromGuestHelp = "Where guests connect, repeatable or comma-separated: vsock://any:PORT, unix:///path (Firecracker and Cloud Hypervisor: <uds_path>_PORT, one per VM), tcp://HOST:PORT or fd://N."

// hostRelay is the engine of both host roles: listeners on every --from, one
// netx.Server behind them.
type hostRelay struct {
	DrainTimeout time.Duration `help:"On SIGTERM, how long to keep handing on what guests already sent." default:"5s"`
}

func checkFrom(froms []netx.Addr) error {
	if len(froms) == 0 {
		return errors.New("--from: at least one address is needed")
	}
	for _, a := range froms {
		if err := a.Require("a host relay listens on", netx.SchemeVsock, netx.SchemeUnix, netx.SchemeTCP, netx.SchemeFD); err != nil {
			return flagErr("from", err)
		}
	}
	return nil
}

// serve listens on every address, serves until rc.Ctx ends, then drains
// and closes the sink, which it owns from the start.
func (h *hostRelay) serve(rc *RunContext, froms []netx.Addr, cfg netx.ServerConfig, sink string) error {
	closeSink := func(ctx context.Context) {
		if err := cfg.Sink.Close(ctx); err != nil {
			rc.Log.Warn("sink not closed cleanly", "to", sink, "err", err)
		}
	}
	var lns []net.Listener
	for _, a := range froms {
		ln, err := netx.Listen(a)
		if err != nil {
			for _, l := range lns {
				_ = l.Close()
			}
			closeSink(context.Background())
			return listenErr("from", a, err)
		}
		lns = append(lns, ln)
	}
	srv := netx.NewServer(cfg)
	failed := make(chan error, len(lns))
	for i, ln := range lns {
		rc.Log.Info("listening", "from", froms[i].String(), "to", sink)
		go func() { failed <- srv.Serve(ln, froms[i].String()) }()
	}
	notify(rc, systemd.Ready)
	stopStats := logStatsOnSignal(rc, func() []any { return serverAttrs(srv) })
	defer stopStats()

	var err error
	select {
	case <-rc.Ctx.Done():
	case err = <-failed:
		rc.Log.Error("a listener failed; shutting down", "err", err)
	}
	notify(rc, systemd.Stopping)
	ctx, cancel := context.WithTimeout(context.Background(), h.DrainTimeout)
	defer cancel()
	if serr := srv.Shutdown(ctx); serr != nil {
		rc.Log.Warn("drain incomplete", append([]any{"err", serr}, serverAttrs(srv)...)...)
	} else {
		rc.Log.Info("stopped", serverAttrs(srv)...)
	}
	closeSink(ctx)
	return err
}

func serverAttrs(srv *netx.Server) []any {
	s := srv.Stats()
	return []any{"connections", s.Accepted, "active", s.Active, "datagrams", s.Datagrams,
		"bytes", s.Bytes, "flushes", s.Flushes, "protocol_errors", s.ProtocolErrors,
		"sink_errors", s.SinkErrors, "duplicates_dropped", s.Duplicates}
}
