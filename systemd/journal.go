package systemd

import (
	"context"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
)

// JournalStream reports whether f is the stream systemd connected to the
// journal (JOURNAL_STREAM names its device and inode, as sd-daemon(3)
// says to check): there lines are read with their priority prefix, and
// the journal stamps the time itself.
func JournalStream(f *os.File) bool {
	dev, ino, ok := strings.Cut(os.Getenv("JOURNAL_STREAM"), ":")
	if !ok {
		return false
	}
	d, derr := strconv.ParseUint(dev, 10, 64)
	i, ierr := strconv.ParseUint(ino, 10, 64)
	if derr != nil || ierr != nil {
		return false
	}
	fd, fi, ok := devIno(f)
	return ok && fd == d && fi == i
}

// Journal priorities (syslog's), as sd-daemon(3) prefixes them.
const (
	prioErr     = 3
	prioWarning = 4
	prioInfo    = 6
	prioDebug   = 7
)

func priority(l slog.Level) int {
	switch {
	case l >= slog.LevelError:
		return prioErr
	case l >= slog.LevelWarn:
		return prioWarning
	case l >= slog.LevelInfo:
		return prioInfo
	}
	return prioDebug
}

// NewJournalHandler logs to w for the journal: each line starts with its
// priority, "<4>" for a warning (so that journalctl -p warning finds
// it), and has no time of its own. json picks slog's JSON lines over its
// text ones.
func NewJournalHandler(w io.Writer, json bool, opts *slog.HandlerOptions) slog.Handler {
	o := *opts
	replace := o.ReplaceAttr
	o.ReplaceAttr = func(groups []string, a slog.Attr) slog.Attr {
		if len(groups) == 0 && a.Key == slog.TimeKey {
			return slog.Attr{}
		}
		if replace != nil {
			return replace(groups, a)
		}
		return a
	}
	pw := &prefixWriter{w: w}
	var inner slog.Handler = slog.NewTextHandler(pw, &o)
	if json {
		inner = slog.NewJSONHandler(pw, &o)
	}
	return &journalHandler{inner: inner, pw: pw}
}

// journalHandler sets the priority of the record its inner handler is
// about to write; the handlers derived from it share the writer and its
// lock.
type journalHandler struct {
	inner slog.Handler
	pw    *prefixWriter
}

// prefixWriter writes each record (one Write, as slog's handlers do)
// after its priority.
type prefixWriter struct {
	mu   sync.Mutex
	w    io.Writer
	prio int
	buf  []byte
}

func (p *prefixWriter) Write(b []byte) (int, error) {
	p.buf = append(append(append(p.buf[:0], '<'), strconv.Itoa(p.prio)...), '>')
	p.buf = append(p.buf, b...)
	if _, err := p.w.Write(p.buf); err != nil {
		return 0, err
	}
	return len(b), nil
}

func (h *journalHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return h.inner.Enabled(ctx, l)
}

func (h *journalHandler) Handle(ctx context.Context, r slog.Record) error {
	h.pw.mu.Lock()
	defer h.pw.mu.Unlock()
	h.pw.prio = priority(r.Level)
	return h.inner.Handle(ctx, r)
}

func (h *journalHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &journalHandler{inner: h.inner.WithAttrs(as), pw: h.pw}
}

func (h *journalHandler) WithGroup(name string) slog.Handler {
	return &journalHandler{inner: h.inner.WithGroup(name), pw: h.pw}
}
