package shim

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/katatrace/katatrace/endpoint"
	"github.com/katatrace/katatrace/guestrelay"
	"github.com/katatrace/katatrace/jaegerthrift"
	"github.com/katatrace/katatrace/metrics"
	"github.com/katatrace/katatrace/systemd"
	"github.com/katatrace/katatrace/tracing"
	"github.com/katatrace/katatrace/wire"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/uber/jaeger-client-go"
)

// relays are the shim's in-process guest relays.
type relays struct {
	jaeger *guestrelay.Relay
	all    []*guestrelay.Relay
}

// metrics exports the relays' counters.
func (r *relays) metrics() prometheus.Collector {
	ms := make([]metrics.Relay, len(r.all))
	for i, rl := range r.all {
		ms[i] = rl
	}
	return metrics.ForRelays(ms...)
}

// ready is the shim's readiness: every relay connected to its host.
func (r *relays) ready() error { return guestrelay.NotConnected(r.all...) }

func (c *shim) startRelays(log *slog.Logger) (*relays, error) {
	r := &relays{}
	if c.NoRelay {
		return r, nil
	}
	start := func(log *slog.Logger, kind wire.Kind, from, to endpoint.Addr) (*guestrelay.Relay, error) {
		pc, err := endpoint.ListenPacket(from)
		if err != nil {
			flag := "from"
			if kind == wire.KindText {
				flag = "journal-from"
			}
			return nil, c.ListenErr(flag, from, err)
		}
		rl := c.StartRelay(log, kind, from, to, pc)
		r.all = append(r.all, rl)
		return rl, nil
	}
	var err error
	if r.jaeger, err = start(log, wire.KindJaeger, c.From, c.To); err != nil {
		return r, err
	}
	switch {
	case c.Journal && systemd.UnderManager() && c.JournalFrom.Scheme == endpoint.SchemeUnixgram:
		// journald owns /dev/log there: kata-journald-host-redirect.service
		// carries the journal instead.
		log.Warn("--journal is for guests without systemd; journal relay not started (under systemd, kata-journald-host-redirect.service carries the journal)",
			"journal_from", c.JournalFrom.String())
	case c.Journal:
		if _, err := start(log.With("relay", "journal"), wire.KindText, c.JournalFrom, c.JournalTo); err != nil {
			return r, err
		}
	}
	return r, nil
}

// stop stops every relay at once: each reads what was waiting in its
// socket and waits for the host to confirm what it carried, all of it
// within timeout (Shutdown obeys its context).
func (r *relays) stop(log *slog.Logger, timeout time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var wg sync.WaitGroup
	for _, rl := range r.all {
		wg.Go(func() {
			err := rl.Shutdown(ctx)
			if readErr := rl.Err(); readErr != nil {
				log.Error("relay stopped reading early", "err", readErr)
			}
			var na *guestrelay.NotAcceptedError
			switch {
			case errors.As(err, &na):
				log.Error("flush to the host incomplete: the host's endpoint has not accepted everything", "kind", rl.Kind().String(), "not_accepted", na.Datagrams, "err", err)
			case err != nil:
				log.Warn("flush to the host incomplete", "kind", rl.Kind().String(), "err", err)
			}
		})
	}
	wg.Wait()
}

// nameApart holds a static session's spans until it is known whether
// they are the agent's only trace. An agent that traces itself (the Kata
// 1.x agent: its own root kata-agent, source=agent) sends spans of
// another trace through the relay: the shim's are then sent as service
// --own-service-name, tagged source the same, so that Jaeger shows two
// traces told apart, not two look-alikes. Otherwise, at the session's
// end, they go as they are.
func (c *shim) nameApart(log *slog.Logger, rl *guestrelay.Relay, t *tracing.Transport, s *tracing.Session) {
	own := s.TraceID()
	var seen atomic.Bool
	rl.Inspect(func(ps [][]byte) {
		if seen.Load() {
			return
		}
		for _, p := range ps {
			b, err := jaegerthrift.DecodeEmitBatch(p)
			if err != nil {
				continue
			}
			for _, sp := range b.Spans {
				if uint64(sp.TraceIdLow) == own.Low && uint64(sp.TraceIdHigh) == own.High {
					continue
				}
				seen.Store(true)
				if t.Release(tracing.Labels{Service: c.OwnServiceName, Source: c.OwnServiceName}) {
					log.Info("the agent traces itself: the shim's spans are a trace of their own, apart from the agent's",
						"service", c.OwnServiceName, "agent_service", b.Process.ServiceName)
					s.Flush()
				}
				rl.Inspect(nil)
				return
			}
		}
	})
	s.OnFinish(func() {
		rl.Inspect(nil)
		t.Release(tracing.Labels{})
	})
}

// newSession starts a trace whose spans go onto the relay's queue (or,
// with --no-relay, over UDP to --from).
func (c *shim) newSession(log *slog.Logger, r *relays, mode, typ string, parent jaeger.SpanContext) *tracing.Session {
	if r.jaeger == nil {
		t, err := jaeger.NewUDPTransport(c.From.HostPort, 0)
		if err != nil {
			log.Error("no tracer: cannot send to --from", "err", err)
			return tracing.NoSession()
		}
		return tracing.NewSession(c.ServiceName, t, mode, typ, parent, log)
	}
	t := tracing.NewTransport(r.jaeger.Send, 0)
	if mode != "static" {
		return tracing.NewSession(c.ServiceName, t, mode, typ, parent, log)
	}
	t.Hold()
	s := tracing.NewSession(c.ServiceName, t, mode, typ, parent, log)
	c.nameApart(log, r.jaeger, t, s)
	return s
}

// settings reads the kernel command line; bad values are logged, and the
// agent runs untraced rather than the VM failing to boot.
func (c *shim) settings(log *slog.Logger) tracing.Settings {
	b, err := os.ReadFile(c.CmdlineFile)
	if err != nil {
		log.Error("cannot read the kernel command line; tracing is dynamic", "file", c.CmdlineFile, "err", err)
		return tracing.Settings{Mode: tracing.Dynamic}
	}
	s, errs := tracing.ParseCmdline(string(b))
	for _, err := range errs {
		log.Error(err.Error())
	}
	return s
}

// agentEnv is the agent's environment: the shim's own settings out, its
// tracer's destination and the root span's context in.
func (c *shim) agentEnv(tr *tracing.Session) []string {
	env := slices.DeleteFunc(os.Environ(), func(kv string) bool {
		return strings.HasPrefix(kv, "KATATRACE_") || strings.HasPrefix(kv, "NOTIFY_SOCKET=")
	})
	host, port, err := net.SplitHostPort(c.From.HostPort)
	if err != nil || host == "" {
		host, port = "127.0.0.1", "6831"
	}
	return append(env, tr.Env(host, port)...)
}
