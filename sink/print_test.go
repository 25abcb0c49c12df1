package sink

import (
	"bytes"
	"context"
	"encoding/json"
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
	ts := NewTreeSink(&out, time.Hour)
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
	ts := NewTreeSink(&out, 50*time.Millisecond)
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
