package sink

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/katatrace/katatrace/guestid"
	"github.com/katatrace/katatrace/internal/jaegertest"
	"github.com/katatrace/katatrace/internal/testutil"
	"github.com/katatrace/katatrace/jaegerthrift"
)

func TestTreeSink(t *testing.T) {
	var out bytes.Buffer
	ts := NewTreeSink(&out, time.Hour, nil)
	for _, p := range jaegertest.Capture(t, "kata-agent", jaegertest.SmallTrace) {
		if err := ts.Send(p, guestid.Named("vsock:vm(3):1024")); err != nil {
			t.Fatal(err)
		}
	}
	if out.Len() != 0 {
		t.Fatal("printed before the trace went quiet or was flushed")
	}
	if err := ts.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	got := out.String()
	t.Logf("\n%s", got)
	lines := strings.Split(strings.TrimSpace(got), "\n")
	if !strings.HasPrefix(lines[0], "trace ") || !strings.Contains(lines[0], "4 spans from vsock:vm(3):1024") {
		t.Fatalf("header = %q", lines[0])
	}
	if !strings.HasPrefix(lines[1], "└─ kata-agent root  +0s") || !strings.Contains(lines[1], "root-span=true") {
		t.Fatalf("root line = %q", lines[1])
	}
	for _, op := range []string{"boot", "agent-start", "agent-run"} {
		if !strings.Contains(got, "   ├─ kata-agent "+op) && !strings.Contains(got, "   └─ kata-agent "+op) {
			t.Errorf("%s not printed under the root", op)
		}
		if !strings.Contains(got, `event="`+op+` done"`) {
			t.Errorf("log of %s missing", op)
		}
	}
}

func TestTreeSinkPrintsWhenQuiet(t *testing.T) {
	var out testutil.SyncBuffer
	ts := NewTreeSink(&out, 50*time.Millisecond, nil)
	defer ts.Close(context.Background())
	for _, p := range jaegertest.Capture(t, "svc", jaegertest.SmallTrace) {
		ts.Send(p, guestid.Named("peer"))
	}
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(out.String(), "4 spans") {
		if time.Now().After(deadline) {
			t.Fatal("quiet trace not printed")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestTreeSinkPrintsANeverQuietTraceAtItsBound: a guest that keeps
// sending spans of one trace (here the same four, again and again) never
// lets it go quiet; the sink prints it as it stands once it holds the
// bound's spans, says so in the header and the log, and holds no more than
// its bounds meanwhile.
func TestTreeSinkPrintsANeverQuietTraceAtItsBound(t *testing.T) {
	var out, logs testutil.SyncBuffer
	ts := NewTreeSink(&out, time.Hour, slog.New(slog.NewTextHandler(&logs, nil)))
	defer ts.Close(context.Background())
	dgs := jaegertest.Capture(t, "svc", jaegertest.SmallTrace)
	lim := defaultTreeLimits
	for range lim.traceSpans/4 + 100 {
		for _, p := range dgs {
			if err := ts.Send(p, guestid.Named("peer")); err != nil {
				t.Fatal(err)
			}
		}
		ts.mu.Lock()
		held, spans := ts.held, 0
		for _, pt := range ts.traces {
			spans = max(spans, len(pt.spans))
		}
		ts.mu.Unlock()
		if held > lim.totalBytes || spans >= lim.traceSpans {
			t.Fatalf("holds %d bytes, a trace of %d spans: beyond %+v", held, spans, lim)
		}
	}
	header := fmt.Sprintf("%d spans from peer (printed before it went quiet: the trace reached its bound; later spans print apart)", lim.traceSpans)
	if !strings.Contains(out.String(), header) {
		t.Fatalf("no trace printed at its bound; output begins %.300q", out.String())
	}
	if !strings.Contains(logs.String(), "level=WARN") || !strings.Contains(logs.String(), "printed_early_total=1") {
		t.Fatalf("log: %s", logs.String())
	}
}

// TestTreeSinkBounds: each bound prints what is held when it is reached,
// the rest at the next flush; no span is printed twice or lost.
func TestTreeSinkBounds(t *testing.T) {
	a := jaegertest.Capture(t, "a", jaegertest.SmallTrace)
	b := jaegertest.Capture(t, "b", jaegertest.SmallTrace)
	// The bytes of a's spans as they arrive, and of the first three.
	traceBytes, first3 := 0, 0
	for _, p := range a {
		bt, err := jaegerthrift.DecodeEmitBatch(p)
		if err != nil {
			t.Fatal(err)
		}
		for i, s := range bt.Spans {
			if traceBytes += spanBytes(s); i == 2 {
				first3 = traceBytes
			}
		}
	}
	for _, tt := range []struct {
		name   string
		limits treeLimits
		// early and late are the headers printed before the flush and at it.
		early, late []string
	}{
		{"spans of a trace", treeLimits{traceSpans: 3, traceBytes: 1 << 30, totalBytes: 1 << 30},
			[]string{"3 spans from peer (printed before it went quiet: the trace reached its bound", "3 spans from peer (printed before it went quiet: the trace reached its bound"},
			[]string{"1 spans from peer\n", "1 spans from peer\n"}},
		{"bytes of a trace", treeLimits{traceSpans: 1 << 30, traceBytes: first3, totalBytes: 1 << 30},
			[]string{"3 spans from peer (printed before it went quiet: the trace reached its bound", "3 spans from peer (printed before it went quiet: the trace reached its bound"},
			[]string{"1 spans from peer\n", "1 spans from peer\n"}},
		{"bytes of all", treeLimits{traceSpans: 1 << 30, traceBytes: 1 << 30, totalBytes: traceBytes + traceBytes/2},
			[]string{"4 spans from peer (printed before it went quiet: all traces held reached their bound"},
			[]string{"4 spans from peer\n"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var out, logs testutil.SyncBuffer
			ts := NewTreeSink(&out, time.Hour, slog.New(slog.NewTextHandler(&logs, nil)))
			ts.limits = tt.limits
			for _, p := range append(slices.Clone(a), b...) {
				if err := ts.Send(p, guestid.Named("peer")); err != nil {
					t.Fatal(err)
				}
			}
			early := out.String()
			if err := ts.Close(context.Background()); err != nil {
				t.Fatal(err)
			}
			late := strings.TrimPrefix(out.String(), early)
			for name, c := range map[string]struct {
				got  string
				want []string
			}{"before the flush": {early, tt.early}, "at the flush": {late, tt.late}} {
				if n := strings.Count("\n"+c.got, "\ntrace "); n != len(c.want) {
					t.Errorf("%s: %d traces printed, want %d:\n%s", name, n, len(c.want), c.got)
				}
				for _, h := range c.want {
					if !strings.Contains(c.got, h) {
						t.Errorf("%s: no %q in\n%s", name, h, c.got)
					}
				}
			}
			if n := strings.Count(out.String(), "kata-agent") + strings.Count(out.String(), "─ a ") + strings.Count(out.String(), "─ b "); n != 8 {
				t.Errorf("%d spans printed in all, want 8:\n%s", n, out.String())
			}
			if !strings.Contains(logs.String(), "printed before it went quiet") {
				t.Errorf("nothing logged: %s", logs.String())
			}
		})
	}
}

func TestJSONLSink(t *testing.T) {
	var out bytes.Buffer
	js := NewJSONLSink(&out)
	for _, p := range jaegertest.Capture(t, "kata-agent", jaegertest.SmallTrace) {
		if err := js.Send(p, guestid.Named("unix:///run/vm1.sock_6831#1")); err != nil {
			t.Fatal(err)
		}
	}
	var recs []SpanRecord
	for _, l := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		var r SpanRecord
		if err := json.Unmarshal([]byte(l), &r); err != nil {
			t.Fatalf("%q: %v", l, err)
		}
		recs = append(recs, r)
	}
	if len(recs) != 4 {
		t.Fatalf("%d records", len(recs))
	}
	var root SpanRecord
	for _, r := range recs {
		if r.Operation == "root" {
			root = r
		}
	}
	for _, r := range recs {
		if r.Service != "kata-agent" || r.Peer != "unix:///run/vm1.sock_6831#1" || r.TraceID != root.TraceID || len(r.SpanID) != 16 {
			t.Fatalf("record %+v", r)
		}
		if r.Operation != "root" && (r.ParentID != root.SpanID || len(r.Logs) != 1 || r.Logs[0].Fields["event"] != r.Operation+" done") {
			t.Fatalf("child %+v", r)
		}
	}
	if root.Tags["root-span"] != true || root.ParentID != "" {
		t.Fatalf("root %+v", root)
	}
}

func TestDecodeRejectsGarbage(t *testing.T) {
	if _, err := jaegerthrift.DecodeEmitBatch([]byte("not thrift")); err == nil {
		t.Fatal("garbage decoded")
	}
}
