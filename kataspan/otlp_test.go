package kataspan

import (
	"bytes"
	"math"
	"reflect"
	"strings"
	"testing"
	"unsafe"

	"github.com/katatrace/katatrace/sink"
	"go.opentelemetry.io/collector/pdata/ptrace"
	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"
)

// viaModel is what AppendOTLP must equal: the span put into the model
// (Traces), named by its sandbox and given the sink's attributes as the
// OTLP sink's encoder gives them (PutStr for Set, where absent for
// Default), as JSON.
func viaModel(t testing.TB, s *Span, service, sandbox string, adds sink.ResourceAdds) string {
	t.Helper()
	td, err := s.Traces(service)
	if err != nil {
		t.Fatal(err)
	}
	if sandbox != "" {
		putSandbox(td, sandbox)
	}
	attrs := td.ResourceSpans().At(0).Resource().Attributes()
	for _, a := range adds.Set {
		attrs.PutStr(a.Key, a.Value)
	}
	for _, a := range adds.Default {
		if _, ok := attrs.Get(a.Key); !ok {
			attrs.PutStr(a.Key, a.Value)
		}
	}
	b, err := (&ptrace.JSONMarshaler{}).MarshalTraces(td)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// direct is AppendOTLP's request read back by the model, as JSON; the
// request begins with prefix (another's bytes: requests concatenate).
func direct(t testing.TB, s *Span, service, sandbox string, adds sink.ResourceAdds) string {
	t.Helper()
	body, err := s.AppendOTLP(nil, service, sandbox, adds)
	if err != nil {
		t.Fatal(err)
	}
	return readBack(t, body)
}

// readBack is an OTLP request read by the model, as JSON.
func readBack(t testing.TB, body []byte) string {
	t.Helper()
	req := ptraceotlp.NewExportRequest()
	if err := req.UnmarshalProto(body); err != nil {
		t.Fatalf("the request does not decode: %v", err)
	}
	b, err := (&ptrace.JSONMarshaler{}).MarshalTraces(req.Traces())
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

var testAdds = sink.ResourceAdds{
	Set:     []sink.Attr{{Key: "katatrace.guest", Value: "cid:3"}, {Key: "katatrace.guest.peer", Value: "conn-1"}},
	Default: []sink.Attr{{Key: "deployment.environment", Value: "test"}, {Key: "service.name", Value: "not-this"}},
}

// TestOTLPAsTheModel: every frame of every capture, encoded straight to
// OTLP, is what the model made of it; and so are spans that give the
// encoder's choices work (keys twice, the host's keys set by the agent,
// names, odd values).
func TestOTLPAsTheModel(t *testing.T) {
	for _, name := range captures {
		t.Run(name, func(t *testing.T) {
			for i, p := range capture(t, name) {
				s, err := Decode(p)
				if err != nil {
					t.Fatal(err)
				}
				for _, sandbox := range []string{"", "sb-1"} {
					if got, want := direct(t, s, "kata-agent", sandbox, testAdds), viaModel(t, s, "kata-agent", sandbox, testAdds); got != want {
						t.Fatalf("frame %d (sandbox %q):\n got %s\nwant %s", i, sandbox, got, want)
					}
				}
			}
		})
	}
	str := func(s string) Value { return Value{Type: TypeString, Str: s} }
	for _, tt := range []struct {
		name string
		span Span
	}{
		{"the agent names its service and sandbox, and a host key", Span{HasResource: true, Resource: []KeyValue{
			{"katatrace.guest", str("forged")}, {"sandbox_id", str("own")}, {"service.name", str("agent-x")}}}},
		{"a service that is no string", Span{HasResource: true, Resource: []KeyValue{{"service.name", Value{Type: TypeInt, Int: 3}}}}},
		{"keys twice, unsorted", Span{Attributes: []KeyValue{{"b", str("1")}, {"a", str("2")}, {"b", str("3")}},
			Events: []Event{{Name: "e", Attributes: []KeyValue{{"x", str("1")}, {"x", str("2")}}}},
			Links:  []Link{{TraceID: [16]byte{1}, SpanID: 2, IsRemote: true, TraceFlags: 1, TraceState: []KeyString{{"k", "v"}, {"k2", "v2"}}, Attributes: []KeyValue{{"y", str("")}}}}}},
		{"values of every kind, zero and not", Span{TraceFlags: 1, Kind: KindConsumer, Status: StatusError, StatusMessage: "bad", TraceState: []KeyString{{"a", "b"}},
			DroppedAttributes: 1, DroppedEvents: 2, DroppedLinks: 3, Attributes: []KeyValue{
				{"b", Value{Type: TypeBool}}, {"f", Value{Type: TypeFloat, Float: math.NaN()}}, {"fa", Value{Type: TypeFloatArray, Floats: []float64{0, -1.5}}},
				{"i", Value{Type: TypeInt, Int: -1}}, {"ia", Value{Type: TypeIntArray, Ints: []int64{math.MinInt64}}}, {"ba", Value{Type: TypeBoolArray, Bools: []bool{true, false}}},
				{"s", str("")}, {"sa", Value{Type: TypeStringArray, Strings: []string{"", strings.Repeat("x", 300)}}}, {"empty", Value{Type: TypeStringArray, Strings: []string{}}},
			}}},
		{"large", Span{Name: strings.Repeat("n", 70000), Attributes: manyAttributes(2000)}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := tt.span
			s.Start, s.End = Time{1, 2}, Time{3, 4}
			for i := range s.Events {
				s.Events[i].Time = Time{5, 6}
			}
			if got, want := direct(t, &s, "kata-agent", "sb", testAdds), viaModel(t, &s, "kata-agent", "sb", testAdds); got != want {
				t.Fatalf("\n got %s\nwant %s", got, want)
			}
		})
	}
}

func manyAttributes(n int) []KeyValue {
	kvs := make([]KeyValue, n)
	for i := range kvs {
		kvs[i] = KeyValue{Key: strings.Repeat("k", i%40) + string(rune('a'+i%26)), Value: Value{Type: TypeInt, Int: int64(i)}}
	}
	return kvs
}

// TestOTLPConcatenates: requests appended to one buffer read back as one
// request holding each one's spans, and a span whose time is out of range
// writes nothing.
func TestOTLPConcatenates(t *testing.T) {
	var body []byte
	ps := capture(t, "json-otel017-api")
	for _, p := range ps {
		s, err := Decode(p)
		if err != nil {
			t.Fatal(err)
		}
		if body, err = s.AppendOTLP(body, "kata-agent", "", testAdds); err != nil {
			t.Fatal(err)
		}
	}
	req := ptraceotlp.NewExportRequest()
	if err := req.UnmarshalProto(body); err != nil {
		t.Fatal(err)
	}
	if n := req.Traces().SpanCount(); n != len(ps) {
		t.Fatalf("%d spans, want %d", n, len(ps))
	}
	bad := &Span{Start: Time{Nanos: 1e9}}
	if out, err := bad.AppendOTLP(body, "kata-agent", "", testAdds); err == nil || len(out) != len(body) {
		t.Fatalf("a bad start time: %v, %d bytes written", err, len(out)-len(body))
	}
	bad = &Span{Events: []Event{{Time: Time{Secs: math.MaxUint64}}}}
	if out, err := bad.AppendOTLP(body, "kata-agent", "", testAdds); err == nil || !strings.Contains(err.Error(), "event 0") || len(out) != len(body) {
		t.Fatalf("a bad event time: %v, %d bytes written", err, len(out)-len(body))
	}
}

// TestTransientForgetsTheFrame: once a transient span is encoded and
// forgotten, no string it holds, in its slices' whole arrays, points into
// the frame it borrowed (a frame's buffer is the reader's, reused).
func TestTransientForgetsTheFrame(t *testing.T) {
	for _, name := range captures {
		for i, frame := range capture(t, name) {
			p := bytes.Clone(frame)
			tr := &transient{}
			if err := decodeInto(&tr.span, p, true); err != nil {
				t.Fatal(err)
			}
			if _, err := tr.span.AppendOTLP(nil, "kata-agent", "", testAdds); err != nil {
				t.Fatal(err)
			}
			lo, hi := uintptr(unsafe.Pointer(unsafe.SliceData(p))), uintptr(unsafe.Pointer(unsafe.SliceData(p)))+uintptr(len(p))
			borrowed := 0
			var walk func(v reflect.Value)
			walk = func(v reflect.Value) {
				switch v.Kind() {
				case reflect.String:
					if d := uintptr(unsafe.Pointer(unsafe.StringData(v.String()))); v.Len() > 0 && d >= lo && d < hi {
						borrowed++
					}
				case reflect.Slice:
					for i := range v.Cap() {
						walk(v.Slice(0, v.Cap()).Index(i))
					}
				case reflect.Struct:
					for i := range v.NumField() {
						walk(v.Field(i))
					}
				}
			}
			walk(reflect.ValueOf(tr.span))
			if borrowed == 0 {
				t.Fatalf("%s frame %d: the decoded span borrows nothing: the test cannot tell", name, i)
			}
			tr.forget()
			borrowed = 0
			walk(reflect.ValueOf(tr.span))
			if borrowed != 0 {
				t.Fatalf("%s frame %d: %d strings still point into the frame", name, i, borrowed)
			}
		}
	}
}
