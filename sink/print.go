package sink

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/katatrace/katatrace/guestid"
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
type TreeSink struct {
	mu     sync.Mutex
	w      io.Writer
	idle   time.Duration
	traces map[string]*pendingTrace
	order  []string
	stop   chan struct{}
	done   chan struct{}
	once   sync.Once
}

type pendingTrace struct {
	id    string
	spans []printSpan
	last  time.Time
}

type printSpan struct {
	*jaeger.Span
	service string
	peer    string
}

// NewTreeSink prints to w; Close stops its timer.
func NewTreeSink(w io.Writer, idle time.Duration) *TreeSink {
	t := &TreeSink{w: w, idle: idle, traces: map[string]*pendingTrace{}, stop: make(chan struct{}), done: make(chan struct{})}
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
		pt.spans = append(pt.spans, printSpan{Span: s, service: b.Process.ServiceName, peer: from.Conn})
		pt.last = now
	}
	return nil
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
	var err error
	t.order = slices.DeleteFunc(t.order, func(id string) bool {
		pt := t.traces[id]
		if !ready(pt) {
			return false
		}
		delete(t.traces, id)
		if _, werr := io.WriteString(t.w, formatTree(pt.id, pt.spans)); werr != nil {
			err = werr
		}
		return true
	})
	return err
}

// formatTree renders one trace: a header, then each span under its parent,
// with its start offset from the trace's first span, duration, tags and logs.
func formatTree(traceID string, spans []printSpan) string {
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
	fmt.Fprintf(&b, "trace %s: %d spans from %s\n", traceID, len(spans), strings.Join(slices.Sorted(maps.Keys(peers)), ", "))
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
