package hostrelay

import (
	"bytes"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestIdleFromIsWarnedOnlyWhileNothingListens: a relay watching several
// hypervisors' trees (the forwarder unit's default), one of them
// listening, says each idle --from once at INFO, not a warning a minute
// for ever; once nothing listens at all, the warnings come back, every
// minute.
func TestIdleFromIsWarnedOnlyWhileNothingListens(t *testing.T) {
	var out lockedBuffer
	log := slog.New(slog.NewTextHandler(&out, nil))
	vsock := 1
	var l listenerSet
	l.add("vsock://any:10240", func() int { return vsock }, nil)
	l.add("unix:///run/kata/*/ch-vm.sock_10240", func() int { return 0 }, func() string { return "/run/kata/*" })
	line, warned := "", map[string]time.Time{}
	check := func() string {
		before := len(out.String())
		l.check(log, nil, &line, warned)
		return out.String()[before:]
	}
	aMinuteAgo := func() {
		for k := range warned {
			warned[k] = time.Now().Add(-2 * idleWarnEvery)
		}
	}
	got := check()
	if !strings.Contains(got, "level=INFO") || !strings.Contains(got, "ch-vm.sock_10240") || strings.Contains(got, "level=WARN") {
		t.Fatalf("beside a listening --from, the idle one said:\n%s", got)
	}
	aMinuteAgo()
	if got := check(); got != "" {
		t.Fatalf("a minute later, beside a listening --from:\n%s", got)
	}
	if line != "listening on 1 sockets; nothing yet for unix:///run/kata/*/ch-vm.sock_10240" {
		t.Errorf("status %q", line)
	}
	vsock = 0
	aMinuteAgo()
	got = check()
	if strings.Count(got, "level=WARN") != 2 || !strings.Contains(got, "no guest can connect through it") {
		t.Fatalf("nothing listening, a minute on: want both warned:\n%s", got)
	}
	if got := check(); got != "" {
		t.Fatalf("again within the minute:\n%s", got)
	}
}

// lockedBuffer is a log's output, written from any goroutine.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
