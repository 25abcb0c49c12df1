package roles

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/katatrace/katatrace/endpoint"
	"github.com/katatrace/katatrace/handover"
	"github.com/katatrace/katatrace/hold"
	"github.com/katatrace/katatrace/hostrelay"
	"github.com/katatrace/katatrace/internal/lowmem"
	"github.com/katatrace/katatrace/metrics"
	"github.com/katatrace/katatrace/sink"
	"github.com/katatrace/katatrace/systemd"
	"github.com/katatrace/katatrace/wire"
)

// fromGuestHelp is the help of a host relay's --from.
const fromGuestHelp = "Where guests connect, repeatable or comma-separated: vsock://any:PORT, unix:///path (Firecracker, Cloud Hypervisor, Dragonball, OpenVMM: the VMM's socket plus _PORT, one per VM; a glob in the directories, e.g. unix:///run/vc/firecracker/*/root/kata.hvsock_6831, finds VMs as they start: a VM's socket is made once its VMM's own, the path without _PORT, is there, or at once for a name without _PORT), tcp://HOST:PORT or fd://N."

// hostRelay is the engine of both host roles: listeners on every --from, one
// hostrelay.Server behind them.
type hostRelay struct {
	DrainTimeout           time.Duration `help:"How long a stop (SIGTERM) takes at most: what guests had sent when it began is read and handed on (in at most half of it), then the sink's endpoint takes what the sink holds (a collector, OTLP); what it could not take is said lost per guest, or, with a file descriptor store, goes to the next process." default:"5s"`
	MaxConnections         int           `help:"Connections one listener holds at most; more are refused, logged and counted." default:"4096"`
	MaxConnectionsPerGuest int           `help:"Connections one guest (a vsock CID, or the process connecting to a hybrid-vsock socket) holds at most." default:"64"`
	HelloTimeout           time.Duration `help:"How long a new connection has to send its hello (a socat guest: its first bytes; a Kata agent sends none, and is never timed out)." default:"60s"`
	FrameTimeout           time.Duration `help:"How long a frame (on a raw stream, a datagram) may stay unfinished: a guest relay's or raw peer's connection is then closed; a Kata agent's frame is dropped (its rest skipped as it comes) and its connection kept. A peer quiet between frames is never cut." default:"60s"`
	GuestRate              ByteRate      `help:"Each guest's budget, bytes of datagrams per second, all its connections together (a Kata agent sends far less); beyond it, while other guests send too, the host reads from that guest only as fast as the budget allows (the excess waits in, and is dropped and counted by, the guest's own queue), so that one VM cannot crowd out the others. 0: no budget." default:"1MiB/s"`
	GuestBurst             ByteSize      `help:"How far a guest may run ahead of --guest-rate at once (a trace sent at shutdown, say)." default:"1MiB"`
	MaxHeldBytes           ByteSize      `help:"Memory held for frames still arriving, of all guests together: a frame larger than a connection's own 16KiB buffer is read only once it has room, and waits unread in the guest's socket until then (a frame begun is always read to its end), so that no guest can make this process hold more." default:"64MiB"`
	MaxHeldBytesPerGuest   ByteSize      `help:"The same for each guest (a vsock CID, or the process connecting to a hybrid-vsock socket), all its connections together: a frame is given room of 256KiB, or its own size when larger." default:"16MiB"`
	FDStoreMax             int           `name:"fd-store-max" help:"The unit's FileDescriptorStoreMax= (the shipped units set both): guests' connections and the listeners are kept in the unit's file descriptor store, so that a restart or crash of this process never ends them. systemd 254 and later say it in $FDSTORE, which wins; 0, where systemd does not say it, keeps none." default:"0"`
	HostProc               string        `help:"Where the host's processes are seen, to find a QEMU guest's Kata sandbox ID from its VMM's command line (its -name and vsock guest-cid): /proc, or in a container without the host's PID namespace the node's /proc mounted read-only (the chart's /host/proc). A hybrid-vsock guest's is its socket's path." default:"/proc"`
	HandoverSocket         string        `help:"Where no service manager keeps a file descriptor store (a container: the Kubernetes DaemonSet with maxSurge 1), a unix socket on the node, an absolute path, through which this process hands its listeners, guests' connections and undelivered batches to the next process of the same role before it exits, so that a rollout ends no guest's connection: at its start it takes everything from the process waiting there, if any, then waits there itself. Having handed over, it serves nothing (/readyz 503) until stopped; /readyz says only whether the process holds the node's guests (a DaemonSet's controller deletes an old pod that is not ready). A stop (SIGTERM) without a successor drains and closes, as without a store. Give each role its own path." placeholder:"PATH"`
	HandoverResume         time.Duration `help:"With --handover-socket: how long a process whose successor took everything and went away without serving it (a new pod that failed to start) waits for another before it serves it all again itself." default:"30s"`
	metricsOption
}

// limits checks the limit flags.
func (h *hostRelay) limits() error {
	switch {
	case h.MaxConnections < 1:
		return fmt.Errorf("--max-connections must be at least 1, not %d", h.MaxConnections)
	case h.MaxConnectionsPerGuest < 1:
		return fmt.Errorf("--max-connections-per-guest must be at least 1, not %d", h.MaxConnectionsPerGuest)
	case h.DrainTimeout <= 0:
		return fmt.Errorf("--drain-timeout must be positive, not %v: it is the time a stop has", h.DrainTimeout)
	case h.HelloTimeout <= 0 || h.FrameTimeout <= 0:
		return fmt.Errorf("--hello-timeout and --frame-timeout must be positive")
	case h.GuestRate > 0 && h.GuestBurst < wire.MaxDatagram:
		return fmt.Errorf("--guest-burst: %s is too small: the largest datagram is %d bytes", h.GuestBurst, wire.MaxDatagram)
	case h.FDStoreMax < 0:
		return fmt.Errorf("--fd-store-max must be 0 (keep none) or more, not %d", h.FDStoreMax)
	case h.HandoverSocket != "" && h.FDStoreMax > 0:
		return flagErr("handover-socket", errors.New("give it or --fd-store-max, not both: the handover socket is for where no service manager keeps a store"))
	case h.MaxHeldBytesPerGuest < hold.Chunk || h.MaxHeldBytesPerGuest > 1<<40:
		return flagErr("max-held-bytes-per-guest", fmt.Errorf("%s: give %s to 1TiB", h.MaxHeldBytesPerGuest, ByteSize(hold.Chunk)))
	case h.MaxHeldBytes < h.MaxHeldBytesPerGuest:
		return flagErr("max-held-bytes", fmt.Errorf("%s is less than one guest's (--max-held-bytes-per-guest %s)", h.MaxHeldBytes, h.MaxHeldBytesPerGuest))
	}
	if h.HandoverResume <= 0 {
		return flagErr("handover-resume", fmt.Errorf("%v: give a positive duration", h.HandoverResume))
	}
	if !filepath.IsAbs(h.HostProc) {
		return flagErr("host-proc", fmt.Errorf("%q: give an absolute path", h.HostProc))
	}
	if err := checkHandoverSocket(h.HandoverSocket); err != nil {
		return flagErr("handover-socket", err)
	}
	return h.metricsOption.validate()
}

// checkHandoverSocket checks a --handover-socket path ("": none).
func checkHandoverSocket(p string) error {
	switch {
	case p == "":
		return nil
	case !filepath.IsAbs(p):
		return fmt.Errorf("%q: give an absolute path (both processes must find it)", p)
	case filepath.Clean(p) != p || strings.HasSuffix(p, "/"):
		return fmt.Errorf("%q: give the path in its clean form (%s)", p, filepath.Clean(p))
	case len(p) > handover.MaxPath: // with room for the name it is bound under at first
		return fmt.Errorf("%q: %d bytes, and a unix socket's path takes at most %d", p, len(p), handover.MaxPath)
	case strings.ContainsRune(p, 0):
		return fmt.Errorf("%q: a NUL byte", p)
	}
	return nil
}

// checkFrom checks a host relay's --from; port is the role's vsock port,
// for the name of a hybrid-vsock socket (PATH_PORT) in an error: a vsock
// --from's, if one is given.
func checkFrom(froms []endpoint.Addr, port uint32) error {
	if len(froms) == 0 {
		return errors.New("--from: at least one address is needed")
	}
	for _, a := range froms {
		if a.Scheme == endpoint.SchemeVsock && a.Port != 0 {
			port = a.Port
			break
		}
	}
	for _, a := range froms {
		if err := a.Require("a host relay listens on", endpoint.SchemeVsock, endpoint.SchemeUnix, endpoint.SchemeTCP, endpoint.SchemeFD); err != nil {
			return flagErr("from", err)
		}
		if err := a.CheckNotVMMSocket(port); err != nil {
			return flagErr("from", err)
		}
		if a.IsPattern() {
			if err := a.CheckPattern(); err != nil {
				return flagErr("from", err)
			}
		}
	}
	return nil
}

// serve runs a host relay on every address (hostrelay.Host) until rc.Ctx
// ends, then stops it; the host owns the sink from the start.
func (h *hostRelay) serve(rc *RunContext, froms []endpoint.Addr, cfg hostrelay.ServerConfig, to string) error {
	cfg.MaxConns, cfg.MaxConnsPerGuest = h.MaxConnections, h.MaxConnectionsPerGuest
	cfg.HelloTimeout, cfg.FrameTimeout = h.HelloTimeout, h.FrameTimeout
	cfg.GuestRate, cfg.GuestBurst = float64(h.GuestRate), int(h.GuestBurst)
	cfg.HeldBytes, cfg.HeldBytesPerGuest = int(h.MaxHeldBytes), int(h.MaxHeldBytesPerGuest)
	cfg.ProcRoot = h.HostProc
	var (
		store   keeper
		prev    predecessor
		err     error
		handing handing // the handover socket's side of the stop
	)
	if h.HandoverSocket != "" {
		handing.resumeAfter = h.HandoverResume
		prev, err = takeOver(rc, &handing, h.HandoverSocket, 2*h.DrainTimeout+30*time.Second)
		if handing.store != nil {
			store = handing.store
		}
	} else {
		store, prev, err = openStore(rc, h.FDStoreMax)
	}
	if err != nil {
		hostrelay.CloseSink(cfg.Sink, to, h.DrainTimeout, rc.Log)
		return err
	}
	switch {
	case handing.store != nil:
		cfg.Store = store
		rc.Log.Info("guests' connections are kept for the next process at the handover socket", "path", h.HandoverSocket, "held", store.Len())
	case store != nil:
		cfg.Store = store
		rc.Log.Info("guests' connections are kept in the unit's file descriptor store", "size", store.Max(), "held", store.Len())
	case cfg.Messages != nil:
		rc.Log.Warn("no file descriptor store (run kata-trace-forwarder.service: FileDescriptorStoreMax= and --fd-store-max; in a container, --handover-socket): when this process stops, every agent's tracing ends")
	default:
		rc.Log.Info("no file descriptor store (run the shipped unit: FileDescriptorStoreMax= and --fd-store-max; in a container, --handover-socket): a restart closes guests' connections (v2 guest relays reconnect and resend; a socat guest ends)")
	}
	if store == nil && len(prev.conns)+len(prev.listeners) > 0 {
		rc.Log.Warn("the unit's previous process kept connections in the store, and this one keeps none (--fd-store-max 0): they and its listeners are served, and stay in the store until the unit stops",
			"connections", len(prev.conns), "listeners", len(prev.listeners))
	}
	kl := &keptListeners{store: store, log: rc.Log, prev: prev.listeners}
	spans := cfg.Messages != nil
	var srv *hostrelay.Server
	runCtx, stopRun := context.WithCancelCause(rc.Ctx)
	defer stopRun(nil)
	hc := hostrelay.HostConfig{
		Server: cfg, From: froms, To: to, DrainTimeout: h.DrainTimeout,
		Listen:   kl.listen,
		Adopt:    func(srv *hostrelay.Server) { prev.adopt(rc.Log, srv, cfg.Sink, to) },
		Listened: kl.forgetUnused,
		Ready: func() {
			lowmem.Settle() // up: what start-up touched of the binary leaves the RSS
			if handing.store != nil {
				handing.ready(rc, h.HandoverSocket, stopRun)
			}
			notify(rc, systemd.Ready)
		},
		Stopping: func() { notify(rc, systemd.Stopping) },
		Status:   func(s string) { notify(rc, systemd.Status(s)) },
		Attrs:    func() []any { return serverAttrs(srv, cfg.Sink, spans) },
		Logger:   rc.Log,
	}
	switch {
	case handing.store != nil:
		succ := &storeSuccessor{rc: rc, store: store, kl: kl, to: to, ends: func() string {
			if handing.state.Load() == asked {
				return "the process that asked at the handover socket serves them"
			}
			return "not served by this one yet: the process at the handover socket keeps them for the next that asks"
		}}
		hc.Successor = func() hostrelay.Successor {
			if !handing.successor(runCtx) {
				return nil // a stop without a successor: drain
			}
			return succ
		}
	case store != nil:
		succ := &storeSuccessor{rc: rc, store: store, kl: kl, to: to, ends: func() string {
			return "a stop of the unit, not a restart, ends these connections"
		}}
		hc.Successor = func() hostrelay.Successor { return succ }
	}
	host := hostrelay.NewHost(hc)
	srv = host.Server()
	ready := host.Ready
	if handing.store != nil {
		ready = handing.readiness
	}
	stopMetrics, err := h.serveMetrics(rc, ready,
		metrics.ForServer(srv, metrics.Host{Sink: cfg.Sink, Listeners: host.Listening, Spans: spans}))
	if err != nil {
		host.Stop() // a failure at start hands over as a stop does
		if handing.store != nil {
			handing.finish(rc)
		}
		return err
	}
	defer stopMetrics()
	rc.OnReload(host.Reload)
	stopStats := logStatsOnSignal(rc, func() []any { return serverAttrs(srv, cfg.Sink, spans) }, func() {
		for _, g := range srv.Guests() {
			rc.Log.Info("stats of one "+srv.PeerWord(), guestAttrs(g, spans)...)
		}
	})
	defer stopStats()
	err = host.Run(runCtx)
	if handing.store != nil {
		handing.finish(rc)
		if err == nil {
			err = handing.startErr()
		}
	}
	var le *hostrelay.ListenError
	if errors.As(err, &le) {
		if le.Watch {
			return fmt.Errorf("--from %s: %w", le.Addr, le.Err)
		}
		return listenErr("from", le.Addr, le.Err)
	}
	return err
}

// serverAttrs are a host relay's counters for the log (SIGUSR1, the
// stop), in its words: a Kata agents' forwarder counts frames and spans.
func serverAttrs(srv *hostrelay.Server, out sink.Sink, spans bool) []any {
	s := srv.Stats()
	attrs := append([]any{"connections", s.Accepted, "active", s.Active}, trafficAttrs(s.Traffic, spans)...)
	if !spans {
		attrs = append(attrs, "protocol_errors", s.ProtocolErrors)
	}
	attrs = append(attrs, "refused", s.Refused, "timed_out", s.TimedOut,
		"stored", s.Stored, "not_stored", s.NotStored, "adopted", s.Adopted,
		"held_bytes", s.Held.Held, "held_peak_bytes", s.Held.Peak, "frames_waiting_for_room", s.Held.Waiting)
	return append(attrs, metrics.SinkStateOf(out).LogAttrs()...)
}

// guestAttrs are one guest's counters for the log (SIGUSR1).
func guestAttrs(g hostrelay.GuestStats, spans bool) []any {
	return append([]any{"guest", g.Guest, "sandbox", g.Sandbox, "open_connections", g.Connections, "connections", g.Accepted, "held_bytes", g.Held},
		trafficAttrs(g.Traffic, spans)...)
}

// trafficAttrs are what guests did, in the server's words.
func trafficAttrs(t hostrelay.Traffic, spans bool) []any {
	paused := t.Paused.Round(time.Millisecond).String()
	if spans {
		k := t.Skipped
		return []any{"frames", t.Datagrams, "spans", t.Datagrams - t.Undecodable, "bytes", t.Bytes,
			"skipped_frames", t.Undecodable + k.Oversize + k.Stalled, "undecodable", t.Undecodable,
			"oversize", k.Oversize, "stalled", k.Stalled, "skipped_bytes", k.Bytes, "resyncs", k.Resyncs,
			"sink_errors", t.SinkErrors, "paused_for_budget", paused}
	}
	return []any{"datagrams", t.Datagrams, "bytes", t.Bytes, "flushes", t.Flushes,
		"sink_errors", t.SinkErrors, "guest_dropped", t.GuestDropped, "unparsed_bytes", t.Unparsed,
		"flushes_not_accepted", t.FlushesNotAccepted, "duplicates_dropped", t.Duplicates, "paused_for_budget", paused}
}
