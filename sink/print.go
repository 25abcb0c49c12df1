package sink

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/katatrace/katatrace/guestid"
	"github.com/katatrace/katatrace/internal/lograte"
	"github.com/katatrace/katatrace/jaegerthrift"
	"github.com/uber/jaeger-client-go/thrift-gen/jaeger"
)

// JSONLSink writes one JSON object per span, for scripts.
type JSONLSink struct {
	mu  sync.Mutex
	w   *bufio.Writer
	enc *json.Encoder
}

// NewJSONLSink writes to w.
func NewJSONLSink(w io.Writer) *JSONLSink {
	bw := bufio.NewWriterSize(w, 64<<10)
	return &JSONLSink{w: bw, enc: json.NewEncoder(bw)}
}

// SpanRecord is one line of --to jsonl.
type SpanRecord struct {
	Service    string         `json:"service"`
	TraceID    string         `json:"trace_id"`
	SpanID     string         `json:"span_id"`
	ParentID   string         `json:"parent_id,omitempty"`
	Operation  string         `json:"operation"`
	Start      time.Time      `json:"start"`
	DurationUS int64          `json:"duration_us"`
	Tags       map[string]any `json:"tags,omitempty"`
	Logs       []LogRecord    `json:"logs,omitempty"`
	Process    map[string]any `json:"process_tags,omitempty"`
	Peer       string         `json:"peer"` // the connection
}

// LogRecord is one span log.
type LogRecord struct {
	Time   time.Time      `json:"time"`
	Fields map[string]any `json:"fields"`
}

func tagMap(tags []*jaeger.Tag) map[string]any {
	if len(tags) == 0 {
		return nil
	}
	m := make(map[string]any, len(tags))
	for _, t := range tags {
		if t != nil {
			m[t.Key] = jaegerthrift.TagValue(t)
		}
	}
	return m
}

// Record converts a span of a batch for JSON.
func Record(b *jaeger.Batch, s *jaeger.Span, from guestid.ID) SpanRecord {
	r := SpanRecord{
		Service: b.Process.ServiceName, TraceID: jaegerthrift.TraceID(s), SpanID: jaegerthrift.SpanID(s.SpanId),
		Operation: s.OperationName, Start: time.UnixMicro(s.StartTime).UTC(), DurationUS: s.Duration,
		Tags: tagMap(s.Tags), Process: tagMap(b.Process.Tags), Peer: from.Conn,
	}
	if p := jaegerthrift.ParentID(s); p != 0 {
		r.ParentID = jaegerthrift.SpanID(p)
	}
	for _, l := range s.Logs {
		if l != nil {
			r.Logs = append(r.Logs, LogRecord{Time: time.UnixMicro(l.Timestamp).UTC(), Fields: tagMap(l.Fields)})
		}
	}
	return r
}

// ReadJSONL reads what a JSONLSink wrote (vsock-to-udp-server --to jsonl).
func ReadJSONL(r io.Reader) ([]SpanRecord, error) {
	var out []SpanRecord
	dec := json.NewDecoder(r)
	for {
		var rec SpanRecord
		if err := dec.Decode(&rec); err == io.EOF {
			return out, nil
		} else if err != nil {
			return out, fmt.Errorf("span %d: %w", len(out)+1, err)
		}
		out = append(out, rec)
	}
}

// ReadJSONLFile is ReadJSONL of a file.
func ReadJSONLFile(path string) ([]SpanRecord, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return ReadJSONL(f)
}

// Send decodes one emitBatch datagram and writes its spans.
func (s *JSONLSink) Send(p []byte, from guestid.ID) error {
	b, err := jaegerthrift.DecodeEmitBatch(p)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, sp := range b.Spans {
		if sp != nil {
			if err := s.enc.Encode(Record(b, sp, from)); err != nil {
				return err
			}
		}
	}
	return s.w.Flush()
}

// Flush flushes the writer.
func (s *JSONLSink) Flush(context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Flush()
}

// Close flushes: the writer is the caller's.
func (s *JSONLSink) Close(ctx context.Context) error { return s.Flush(ctx) }

// TreeSink prints each trace as a tree of spans. Spans of a trace arrive in
// several batches, children usually first: a trace is printed once it has
// been quiet for Idle, or at Flush (a guest's flush request, or shutdown).
// What it holds is bounded (see treeLimits): a trace that never goes quiet
// is printed as it stands once it reaches its share, and the traces held
// longest once all of them reach the total; later spans of a trace
// printed so print apart, as a trace of their own.
type TreeSink struct {
	mu       sync.Mutex
	w        io.Writer
	log      *slog.Logger
	idle     time.Duration
	limits   treeLimits
	held     int // bytes, as spanBytes counts them
	traces   map[string]*pendingTrace
	order    []string
	early    uint64 // traces printed at a bound
	boundLog *lograte.Every
	stop     chan struct{}
	done     chan struct{}
	once     sync.Once
}

// treeLimits bound what a TreeSink holds: the spans and bytes of one
// trace, and the bytes of all.
type treeLimits struct {
	traceSpans, traceBytes, totalBytes int
}

// defaultTreeLimits are far above a Kata agent's traces (hundreds of
// spans), and keep a guest that sends one trace id forever, or
// many that never end, from holding the host's memory.
var defaultTreeLimits = treeLimits{traceSpans: 10_000, traceBytes: 8 << 20, totalBytes: 64 << 20}

type pendingTrace struct {
	id    string
	spans []printSpan
	bytes int
	last  time.Time
}

type printSpan struct {
	*jaeger.Span
	service string
	peer    string
}

// NewTreeSink prints to w, and logs to log what it prints early at its
// bounds; Close stops its timer.
func NewTreeSink(w io.Writer, idle time.Duration, log *slog.Logger) *TreeSink {
	if log == nil {
		log = slog.Default()
	}
	t := &TreeSink{w: w, log: log, idle: idle, limits: defaultTreeLimits, traces: map[string]*pendingTrace{},
		boundLog: lograte.NewEvery(5 * time.Second), stop: make(chan struct{}), done: make(chan struct{})}
	go t.tick()
	return t
}

func (t *TreeSink) tick() {
	defer close(t.done)
	tk := time.NewTicker(max(t.idle/4, 10*time.Millisecond))
	defer tk.Stop()
	for {
		select {
		case <-t.stop:
			return
		case now := <-tk.C:
			t.mu.Lock()
			t.printWhere(func(p *pendingTrace) bool { return now.Sub(p.last) >= t.idle })
			t.mu.Unlock()
		}
	}
}

// Send decodes one emitBatch datagram and holds its spans for printing.
func (t *TreeSink) Send(p []byte, from guestid.ID) error {
	b, err := jaegerthrift.DecodeEmitBatch(p)
	if err != nil {
		return err
	}
	now := time.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	var errs []error
	for _, s := range b.Spans {
		if s == nil {
			continue
		}
		id := jaegerthrift.TraceID(s)
		pt := t.traces[id]
		if pt == nil {
			pt = &pendingTrace{id: id}
			t.traces[id] = pt
			t.order = append(t.order, id)
		}
		n := spanBytes(s)
		pt.spans = append(pt.spans, printSpan{Span: s, service: b.Process.ServiceName, peer: from.Conn})
		pt.bytes += n
		pt.last = now
		t.held += n
		if len(pt.spans) >= t.limits.traceSpans || pt.bytes >= t.limits.traceBytes {
			errs = append(errs, t.printEarly(pt, "the trace reached its bound", "trace_spans_max", t.limits.traceSpans, "trace_bytes_max", t.limits.traceBytes))
		}
		for t.held > t.limits.totalBytes && len(t.order) > 0 {
			errs = append(errs, t.printEarly(t.traces[t.order[0]], "all traces held reached their bound", "held_bytes", t.held, "held_bytes_max", t.limits.totalBytes))
		}
	}
	return errors.Join(errs...)
}

// printEarly prints a trace before it went quiet, as it stands, and says
// so; t.mu is held.
func (t *TreeSink) printEarly(pt *pendingTrace, why string, attrs ...any) error {
	t.early++
	t.order = slices.DeleteFunc(t.order, func(id string) bool { return id == pt.id })
	err := t.print(pt, "printed before it went quiet: "+why+"; later spans print apart")
	if ok, n := t.boundLog.Allow(); ok {
		t.log.Warn("--to print: a trace printed before it went quiet, as it stands: "+why, append([]any{"trace_id", pt.id,
			"spans", len(pt.spans), "bytes", pt.bytes, "printed_early_total", t.early, "not_logged", n}, attrs...)...)
	}
	return err
}

// print writes one trace and forgets it (its place in t.order is the
// caller's); t.mu is held.
func (t *TreeSink) print(pt *pendingTrace, note string) error {
	delete(t.traces, pt.id)
	t.held -= pt.bytes
	if _, err := io.WriteString(t.w, formatTree(pt.id, pt.spans, note)); err != nil {
		return fmt.Errorf("print trace %s: %w", pt.id, err)
	}
	return nil
}

// spanBytes is about what a decoded span costs in memory: its strings
// and binary values, and the structs that hold them.
func spanBytes(s *jaeger.Span) int {
	tags := func(ts []*jaeger.Tag) int {
		n := 0
		for _, tg := range ts {
			if tg != nil {
				n += 96 + len(tg.Key) + len(tg.GetVStr()) + len(tg.VBinary)
			}
		}
		return n
	}
	n := 256 + len(s.OperationName) + tags(s.Tags) + 48*len(s.References)
	for _, l := range s.Logs {
		if l != nil {
			n += 48 + tags(l.Fields)
		}
	}
	return n
}

// Flush prints every trace held.
func (t *TreeSink) Flush(context.Context) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.printWhere(func(*pendingTrace) bool { return true })
}

// Close prints what is held and stops the timer.
func (t *TreeSink) Close(ctx context.Context) error {
	t.once.Do(func() { close(t.stop) })
	<-t.done
	return t.Flush(ctx)
}

func (t *TreeSink) printWhere(ready func(*pendingTrace) bool) error {
	var errs []error
	t.order = slices.DeleteFunc(t.order, func(id string) bool {
		pt := t.traces[id]
		if !ready(pt) {
			return false
		}
		if err := t.print(pt, ""); err != nil {
			errs = append(errs, err)
		}
		return true
	})
	return errors.Join(errs...)
}

// formatTree renders one trace: a header, then each span under its parent,
// with its start offset from the trace's first span, duration, tags and logs.
func formatTree(traceID string, spans []printSpan, note string) string {
	slices.SortStableFunc(spans, func(a, b printSpan) int { return int(a.StartTime - b.StartTime) })
	ids := map[int64]bool{}
	children := map[int64][]printSpan{}
	var roots []printSpan
	peers := map[string]bool{}
	for _, s := range spans {
		ids[s.SpanId] = true
		peers[s.peer] = true
	}
	for _, s := range spans {
		if p := jaegerthrift.ParentID(s.Span); p != 0 && ids[p] && p != s.SpanId {
			children[p] = append(children[p], s)
		} else {
			roots = append(roots, s)
		}
	}
	t0 := spans[0].StartTime
	var b strings.Builder
	fmt.Fprintf(&b, "trace %s: %d spans from %s", traceID, len(spans), strings.Join(slices.Sorted(maps.Keys(peers)), ", "))
	if note != "" {
		fmt.Fprintf(&b, " (%s)", note)
	}
	b.WriteByte('\n')
	esc := func(s string) []byte { return AppendEscaped(nil, []byte(s)) } // guest text never drives the terminal
	var walk func(s printSpan, prefix string, last bool)
	walk = func(s printSpan, prefix string, last bool) {
		branch, indent := "├─ ", "│  "
		if last {
			branch, indent = "└─ ", "   "
		}
		line := fmt.Sprintf("%s%s%s %s  +%s  %s", prefix, branch, s.service, s.OperationName,
			micros(s.StartTime-t0), micros(s.Duration))
		if p := jaegerthrift.ParentID(s.Span); p != 0 && !ids[p] {
			line += "  (parent " + jaegerthrift.SpanID(p) + ")"
		}
		b.Write(esc(line))
		for _, tg := range s.Tags {
			if tg != nil {
				fmt.Fprintf(&b, " %s=%s", esc(tg.Key), esc(jaegerthrift.TagString(tg)))
			}
		}
		b.WriteByte('\n')
		for _, l := range s.Logs {
			if l == nil {
				continue
			}
			fmt.Fprintf(&b, "%s%s  · +%s", prefix, indent, micros(l.Timestamp-t0))
			for _, f := range l.Fields {
				if f != nil {
					fmt.Fprintf(&b, " %s=%s", esc(f.Key), esc(jaegerthrift.TagString(f)))
				}
			}
			b.WriteByte('\n')
		}
		kids := children[s.SpanId]
		delete(children, s.SpanId) // a cycle of parent ids prints once
		for i, c := range kids {
			walk(c, prefix+indent, i == len(kids)-1)
		}
	}
	for i, r := range roots {
		walk(r, "", i == len(roots)-1)
	}
	return b.String()
}

// micros formats a microsecond count as a rounded duration.
func micros(us int64) string {
	d := time.Duration(us) * time.Microsecond
	switch {
	case d >= time.Second:
		return d.Round(time.Millisecond).String()
	case d >= time.Millisecond:
		return d.Round(10 * time.Microsecond).String()
	}
	return d.String()
}
