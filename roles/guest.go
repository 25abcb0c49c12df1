package roles

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"sync"
	"syscall"
	"time"

	"github.com/katatrace/katatrace/endpoint"
	"github.com/katatrace/katatrace/guestrelay"
	"github.com/katatrace/katatrace/internal/lowmem"
	"github.com/katatrace/katatrace/metrics"
	"github.com/katatrace/katatrace/systemd"
	"github.com/katatrace/katatrace/wire"
)

// toHostHelp is the help of a guest relay's --to.
const toHostHelp = "Where the host relay listens: vsock://CID:PORT, unix:///path (hybrid vsock), tcp://HOST:PORT or serial:///dev/PATH."

// relayOptions are the flags of every guest relay, the shim's included.
type relayOptions struct {
	Framing    string        `help:"framed: wire protocol v2 (datagrams kept whole; the host confirms what it handed on, and what it did not confirm is resent after a reconnect); v1: wire protocol v1, for a katatrace host older than v2; raw: bare bytes, for a host that runs socat." enum:"framed,v1,raw" default:"framed"`
	QueueBytes ByteSize      `help:"Bytes held while the host is absent or slow (4 bytes of framing per datagram counted); the oldest datagrams are dropped, and counted, beyond it." default:"4MiB"`
	BackoffMax time.Duration `help:"Longest wait between attempts to reach the host." default:"5s"`
}

// guestRelay is the engine of both guest roles: datagrams from --from, one
// stream to --to. The roles declare --from and --to, with their defaults.
type guestRelay struct {
	relayOptions
	DrainTimeout time.Duration `help:"On SIGTERM, how long the stop may take in all: reading what was already waiting in the socket (at most half of it; not what keeps coming), then waiting for the host to confirm everything read." default:"5s"`
	metricsOption
}

func (g *guestRelay) validate(from, to endpoint.Addr, fromSchemes ...string) error {
	if g.DrainTimeout < 0 {
		return fmt.Errorf("--drain-timeout must not be negative")
	}
	if err := g.metricsOption.validate(); err != nil {
		return err
	}
	return g.relayOptions.validate(from, to, fromSchemes...)
}

func (g *relayOptions) validate(from, to endpoint.Addr, fromSchemes ...string) error {
	if err := from.Require("the guest relay reads datagrams from", fromSchemes...); err != nil {
		return flagErr("from", err)
	}
	if err := to.Require("the guest relay connects to", endpoint.SchemeVsock, endpoint.SchemeUnix, endpoint.SchemeTCP, endpoint.SchemeSerial); err != nil {
		return flagErr("to", err)
	}
	if to.Scheme == endpoint.SchemeVsock && to.AnyCID {
		return flagErr("to", &endpoint.AddrError{Value: to.String(), Reason: "the guest connects to one CID, not \"any\"", Example: endpoint.Example(endpoint.SchemeVsock), Scheme: endpoint.SchemeVsock})
	}
	if g.QueueBytes < wire.MaxFrameSize {
		return fmt.Errorf("--queue-bytes: %s is too small: the largest datagram needs %d bytes", g.QueueBytes, wire.MaxFrameSize)
	}
	if g.BackoffMax <= 0 {
		return fmt.Errorf("--backoff-max must be positive")
	}
	return nil
}

// forwarderConfig is the stream side of a guest relay.
func (g *relayOptions) forwarderConfig(kind wire.Kind, to endpoint.Addr, log *slog.Logger) guestrelay.Config {
	return guestrelay.Config{
		Kind:       kind,
		Framing:    framingOf(g.Framing),
		Dial:       func(ctx context.Context) (net.Conn, error) { return endpoint.Dial(ctx, to) },
		Target:     to.String(),
		QueueBytes: int(g.QueueBytes),
		BackoffMin: 100 * time.Millisecond,
		BackoffMax: g.BackoffMax,
		Logger:     log,
	}
}

// start relays from pc to the host at to; Shutdown's context bounds its
// stop.
func (g *relayOptions) start(log *slog.Logger, kind wire.Kind, from, to endpoint.Addr, pc net.PacketConn) *guestrelay.Relay {
	r := guestrelay.StartRelay(g.forwarderConfig(kind, to, log), pc, 0)
	log.Info("relaying", "from", from.String(), "to", to.String(), "kind", kind.String(),
		"framing", g.Framing, "queue_bytes", int64(g.QueueBytes))
	return r
}

// run relays from pc until rc.Ctx ends (or reading fails), then drains.
func (g *guestRelay) run(rc *RunContext, kind wire.Kind, from, to endpoint.Addr, pc net.PacketConn) error {
	r := g.start(rc.Log, kind, from, to, pc)
	stopMetrics, err := g.serveMetrics(rc, func() error { return guestrelay.NotConnected(r) }, metrics.ForRelays(r))
	if err != nil {
		ctx, cancel := context.WithTimeout(context.Background(), g.DrainTimeout)
		defer cancel()
		_ = r.Shutdown(ctx)
		return err
	}
	defer stopMetrics()
	settleGuest(rc)
	notify(rc, systemd.Ready)
	stopStats := logStatsOnSignal(rc, func() []any { return r.Stats().LogAttrs() })
	defer stopStats()

	select {
	case <-rc.Ctx.Done():
	case <-r.ReadDone():
	}
	notify(rc, systemd.Stopping)
	// --drain-timeout bounds the whole stop, from here.
	ctx, cancel := context.WithTimeout(context.Background(), g.DrainTimeout)
	defer cancel()
	err = r.Shutdown(ctx)
	readErr := r.Err()
	if readErr != nil {
		rc.Log.Error("reading datagrams failed; delivered what was held", "err", readErr)
	}
	st := r.Stats()
	switch {
	case errors.As(err, new(*guestrelay.NotAcceptedError)):
		rc.Log.Error("drain incomplete: not everything reached the host's endpoint", append([]any{"err", err}, st.LogAttrs()...)...)
		return errors.Join(readErr, fmt.Errorf("drain incomplete: %w", err))
	case err != nil:
		rc.Log.Warn("drain incomplete", append([]any{"err", err}, st.LogAttrs()...)...)
	case st.HostDropped > 0:
		rc.Log.Warn("drained, but the host could not hand on some datagrams (its sink refused them)", st.LogAttrs()...)
	case g.Framing == "framed":
		rc.Log.Info("drained: the host confirmed every datagram", st.LogAttrs()...)
	case g.Framing == "v1":
		rc.Log.Info("drained: the host answered the last flush", st.LogAttrs()...)
	default:
		rc.Log.Info("drained: every datagram written to the host", st.LogAttrs()...)
	}
	return readErr
}

// settleGuest keeps a guest process small once it is up: a guest's CPUs
// and memory are the workload's. Its resident code is trimmed to what it
// uses, and kept so; its goroutines share one processor unless GOMAXPROCS
// says otherwise: a relay's reader then hands datagrams to its writer on
// the same thread instead of waking another (bench, 20,000 datagrams/s of
// 64 B or 1 KiB: the median latency 40-90 µs lower), and fewer processors
// hold less memory.
func settleGuest(rc *RunContext) {
	if os.Getenv("GOMAXPROCS") == "" {
		runtime.GOMAXPROCS(1)
	}
	// The binary leaves the page cache first: the collection that gives
	// the heap back then faults in single pages, not whole cached folios.
	lowmem.Settle()
	debug.FreeOSMemory()
	lowmem.TrimExecutable()
	lowmem.TrimEvery(int64(guestTrimEvery))
	rc.Log.Debug("settled: resident code pages trimmed", "gomaxprocs", runtime.GOMAXPROCS(0))
}

// guestTrimEvery is how often a guest process unmaps the binary's pages
// it touched (lowmem.TrimEvery): a burst's code leaves the RSS within
// seconds, and a busy relay faults its few hot pages back in twelve times
// a minute.
const guestTrimEvery = 5 * time.Second

// notify tells systemd (if it listens) about a state change.
func notify(rc *RunContext, state string) {
	if ok, err := systemd.Notify(context.WithoutCancel(rc.Ctx), state); err != nil {
		rc.Log.Warn("sd_notify failed", "state", state, "err", err)
	} else if ok {
		rc.Log.Debug("sd_notify sent", "state", state)
	}
}

// logStatsOnSignal logs the counters whenever SIGUSR1 arrives, and then
// what more logs (a host's guests, a line each).
func logStatsOnSignal(rc *RunContext, attrs func() []any, more ...func()) (stop func()) {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGUSR1)
	done := make(chan struct{})
	go func() {
		for {
			select {
			case <-ch:
				rc.Log.Info("stats", attrs()...)
				for _, f := range more {
					f()
				}
			case <-done:
				return
			}
		}
	}()
	return sync.OnceFunc(func() { signal.Stop(ch); close(done) })
}

// framingOf is the --framing flag's value as the guest relay's type.
func framingOf(s string) guestrelay.Framing {
	switch s {
	case "raw":
		return guestrelay.Raw
	case "v1":
		return guestrelay.FramedV1
	}
	return guestrelay.Framed
}
