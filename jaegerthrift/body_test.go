package jaegerthrift

import (
	"context"
	"testing"

	"github.com/uber/jaeger-client-go/thrift"
	"github.com/uber/jaeger-client-go/thrift-gen/jaeger"
)

// TestBodyJoins: a body reads back as its batch, and joined bodies as one
// batch of the first's process holding every span, in order.
func TestBodyJoins(t *testing.T) {
	proc := &jaeger.Process{ServiceName: "svc", Tags: []*jaeger.Tag{{Key: "k", VType: jaeger.TagType_STRING, VStr: ptr("v")}}}
	seq := int64(7)
	var bodies []Body
	want := []int64{}
	for i := range 3 {
		b := &jaeger.Batch{Process: proc, SeqNo: &seq}
		for j := range i + 1 {
			id := int64(i*10 + j + 1)
			b.Spans = append(b.Spans, &jaeger.Span{TraceIdLow: 1, SpanId: id, OperationName: "op"})
			want = append(want, id)
		}
		body, err := EncodeBody(b)
		if err != nil {
			t.Fatal(err)
		}
		if got := read(t, body.Bytes); got.Process.ServiceName != "svc" || len(got.Spans) != i+1 || got.SeqNo != nil {
			t.Fatalf("body %d reads back as %+v", i, got)
		}
		bodies = append(bodies, body)
	}
	got := read(t, Join(bodies))
	if got.Process.ServiceName != "svc" || len(got.Process.Tags) != 1 || len(got.Spans) != len(want) {
		t.Fatalf("joined: %+v", got)
	}
	for i, s := range got.Spans {
		if s.SpanId != want[i] {
			t.Fatalf("span %d is %d, want %d", i, s.SpanId, want[i])
		}
	}
	if n := len(Join(bodies)); n != JoinedSize(len(bodies[0].Process()), len(bodies[0].SpanBytes())+len(bodies[1].SpanBytes())+len(bodies[2].SpanBytes())) {
		t.Fatalf("JoinedSize says other than the %d bytes Join made", n)
	}
}

func ptr[T any](v T) *T { return &v }

func read(t *testing.T, body []byte) *jaeger.Batch {
	t.Helper()
	buf := thrift.NewTMemoryBufferLen(len(body))
	_, _ = buf.Write(body)
	var b jaeger.Batch
	if err := b.Read(context.Background(), thrift.NewTBinaryProtocolConf(buf, &thrift.TConfiguration{})); err != nil {
		t.Fatal(err)
	}
	if buf.Len() != 0 {
		t.Fatalf("%d bytes left after the batch", buf.Len())
	}
	return &b
}
