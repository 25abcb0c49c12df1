package hostrelay

import (
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/katatrace/katatrace/endpoint"
	"github.com/katatrace/katatrace/sink"
)

// listenerSet is what a host relay listens on, per --from: one socket, or
// a watched pattern's (or not yet existing directory's) as many as VMs
// have. A --from with none is said, never silent: the service manager's
// status (systemd's STATUS=), a gauge at 0, and a log line at once; while
// no --from listens at all, a warning every minute and /readyz.
type listenerSet struct {
	mu    sync.Mutex
	froms []listenerFrom
}

type listenerFrom struct {
	from string
	n    func() int
	// missing names the part of a pattern that matches nothing; nil for
	// a plain socket.
	missing func() string
}

func (l *listenerSet) add(from string, n func() int, missing func() string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.froms = append(l.froms, listenerFrom{from, n, missing})
}

// counts is the number of sockets listening per --from.
func (l *listenerSet) counts() map[string]int {
	l.mu.Lock()
	defer l.mu.Unlock()
	m := make(map[string]int, len(l.froms))
	for _, f := range l.froms {
		m[f.from] += f.n()
	}
	return m
}

func (l *listenerSet) total() int {
	n := 0
	for _, c := range l.counts() {
		n += c
	}
	return n
}

// ready is a host relay's readiness: a socket to connect to, and a sink
// whose endpoint is not known to be unreachable.
func (l *listenerSet) ready(out sink.Sink) error {
	if l.total() == 0 {
		return errors.New("no socket listening: every --from matches nothing yet")
	}
	if c, ok := sink.Inner(out).(*sink.CollectorSink); ok && !c.Stats().Up {
		return fmt.Errorf("the sink's endpoint %s is unreachable", c.URL())
	}
	return nil
}

// idleWarnEvery is how often a --from without a socket is warned about.
const idleWarnEvery = time.Minute

// monitor watches the counts every second until stop: status (may be
// nil) as they change, a warning for each --from with nothing listening.
func (l *listenerSet) monitor(log *slog.Logger, status func(string)) (stop func()) {
	done := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		t := time.NewTicker(time.Second)
		defer t.Stop()
		line := ""
		warned := map[string]time.Time{}
		for {
			l.check(log, status, &line, warned)
			select {
			case <-t.C:
			case <-done:
				return
			}
		}
	}()
	return sync.OnceFunc(func() { close(done); <-stopped })
}

func (l *listenerSet) check(log *slog.Logger, status func(string), line *string, warned map[string]time.Time) {
	l.mu.Lock()
	froms := slices.Clone(l.froms)
	l.mu.Unlock()
	total := 0
	ns := make([]int, len(froms))
	for i, f := range froms {
		ns[i] = f.n()
		total += ns[i]
	}
	var idle []string
	for i, f := range froms {
		n := ns[i]
		if n > 0 {
			if _, ok := warned[f.from]; ok {
				delete(warned, f.from)
				log.Info("--from listening now", "from", f.from, "listening", n)
			}
			continue
		}
		idle = append(idle, f.from)
		// While another --from listens, one with nothing is the usual
		// state of a hypervisor's tree on a node that runs another (the
		// forwarder's unit watches them all): said once, at INFO. While
		// nothing listens at all, a warning every minute.
		if last, ok := warned[f.from]; ok && (total > 0 || time.Since(last) < idleWarnEvery) {
			continue
		}
		warned[f.from] = time.Now()
		attrs := []any{"from", f.from}
		if f.missing != nil {
			if m := f.missing(); m != "" {
				attrs = append(attrs, "no_match_for", m, "hint", endpoint.MissingHint(m))
			}
		}
		if total > 0 {
			log.Info("--from has no socket listening yet; the others serve", attrs...)
			continue
		}
		log.Warn("--from has no socket listening: no guest can connect through it", attrs...)
	}
	s := fmt.Sprintf("listening on %d sockets", total)
	if len(idle) > 0 {
		s += "; nothing yet for " + strings.Join(idle, ", ")
	}
	if s != *line {
		*line = s
		if status != nil {
			status(s)
		}
	}
}
