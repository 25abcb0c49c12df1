package kataspan

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"github.com/katatrace/katatrace/internal/katatest"
	"go.opentelemetry.io/collector/pdata/ptrace"
	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"
)

// The captures in testdata were written by Kata's own vsock-exporter,
// driven by the OpenTelemetry Rust SDK of each version; each .decoded.txt
// holds every frame as the Rust types read it back, as JSON.
var captures = []string{"json-otel017-tracing", "json-otel017-api", "bincode-otel014-tracing", "bincode-otel014-api"}

// frames cuts a capture into its payloads: 8-byte big-endian lengths.
func frames(t testing.TB, b []byte) [][]byte {
	t.Helper()
	var out [][]byte
	for len(b) > 0 {
		if len(b) < 8 {
			t.Fatalf("%d bytes after the last frame", len(b))
		}
		n := binary.BigEndian.Uint64(b)
		if uint64(len(b)-8) < n {
			t.Fatalf("frame of %d bytes, %d left", n, len(b)-8)
		}
		out = append(out, b[8:8+n])
		b = b[8+n:]
	}
	return out
}

var frameHeader = regexp.MustCompile(`(?m)^## frame \d+.*\n(?:#.*\n)*`)

// references are the reference decoder's spans, one JSON text a frame.
func references(t testing.TB, name string) [][]byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name+".decoded.txt"))
	if err != nil {
		t.Fatal(err)
	}
	parts := frameHeader.Split(string(b), -1)[1:]
	out := make([][]byte, len(parts))
	for i, p := range parts {
		out[i] = []byte(strings.TrimSpace(p))
	}
	return out
}

func capture(t testing.TB, name string) [][]byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name+".bin"))
	if err != nil {
		t.Fatal(err)
	}
	return frames(t, b)
}

// TestCapturesDecodeAsTheReference: every frame of every capture decodes,
// by its own form, to exactly the span the Rust types read back.
func TestCapturesDecodeAsTheReference(t *testing.T) {
	for _, name := range captures {
		t.Run(name, func(t *testing.T) {
			got, want := capture(t, name), references(t, name)
			if len(got) != 6 || len(want) != len(got) {
				t.Fatalf("%d frames, %d references; want 6 each", len(got), len(want))
			}
			for i, p := range got {
				s, err := Decode(p)
				if err != nil {
					t.Fatalf("frame %d: %v", i, err)
				}
				ref, err := DecodeJSON(want[i])
				if err != nil {
					t.Fatalf("reference %d: %v", i, err)
				}
				if strings.HasPrefix(name, "bincode") {
					// The reference prints the absent resource as null.
					ref.HasResource = false
				}
				if !reflect.DeepEqual(s, ref) {
					t.Fatalf("frame %d:\n got %+v\nwant %+v", i, s, ref)
				}
			}
		})
	}
}

// TestCaptureContents checks the captures' content by hand, so that a
// decoder and reference that agree on a misreading still fail.
func TestCaptureContents(t *testing.T) {
	spans := map[string][]*Span{}
	for _, name := range captures {
		for _, p := range capture(t, name) {
			s, err := Decode(p)
			if err != nil {
				t.Fatal(err)
			}
			spans[name] = append(spans[name], s)
		}
	}
	api := spans["json-otel017-api"]
	root := api[5]
	if root.Name != "root-span" || root.ParentSpanID != 0 {
		t.Fatalf("the last frame is %q (parent %x), want the root", root.Name, root.ParentSpanID)
	}
	if hex.EncodeToString(api[0].TraceID[:]) != "d5549796b885246c67389f3b2fa247d1" || api[0].SpanID != 0x4d833dce7ddddc49 || api[0].ParentSpanID != root.SpanID {
		t.Fatalf("child 0: trace %x span %x parent %x; root %x", api[0].TraceID, api[0].SpanID, api[0].ParentSpanID, root.SpanID)
	}
	c0 := api[0]
	if c0.Kind != KindServer || c0.Status != StatusOk || c0.Start != (Time{1796224249, 340237330}) || c0.End != (Time{1796224249, 342323553}) {
		t.Fatalf("child 0: kind %s status %s, %v to %v", c0.Kind, c0.Status, c0.Start, c0.End)
	}
	attrs := map[string]string{}
	for _, kv := range c0.Attributes {
		attrs[kv.Key] = kv.Value.Type.String() + " " + kv.Value.String()
	}
	for k, v := range map[string]string{"ints": "Array(I64) [1 2 0]", "bools": "Array(Bool) [true false]", "mod": `String "rpc.rs"`,
		"tags": `Array(String) ["a" "b"]`, "ratio": "F64 0", "index": "I64 0", "floats": "Array(F64) [0.5 1.5]", "ok": "Bool true"} {
		if attrs[k] != v {
			t.Errorf("attribute %s = %q, want %q", k, attrs[k], v)
		}
	}
	if len(c0.Events) != 2 || c0.Events[0].Name != "rpc call from shim to agent" || len(c0.Events[0].Attributes) != 2 || len(c0.Events[1].Attributes) != 0 {
		t.Fatalf("child 0's events: %+v", c0.Events)
	}
	var links, errors int
	for _, s := range api {
		links += len(s.Links)
		if s.Status == StatusError {
			errors++
			if s.StatusMessage != "simulated failure" {
				t.Errorf("%s: error message %q", s.Name, s.StatusMessage)
			}
		}
	}
	if links == 0 || errors != 1 {
		t.Fatalf("%d links, %d errors in the API capture", links, errors)
	}
	// The same trace made through tracing-opentelemetry: its attributes
	// and the resource that 0.14 leaves out.
	tr := spans["bincode-otel014-tracing"]
	if tr[0].Name != "create_container" || tr[0].HasResource || tr[5].ParentSpanID != 0 {
		t.Fatalf("bincode tracing capture: %q, resource %v, last parent %x", tr[0].Name, tr[0].HasResource, tr[5].ParentSpanID)
	}
	if j := spans["json-otel017-tracing"][0]; !j.HasResource || len(j.Resource) != 1 || j.Resource[0].Value.Str != "unknown_service" {
		t.Fatalf("JSON tracing capture's resource: %+v", j.Resource)
	}
}

// TestTracesKeepEverything: the pdata form holds what the span held.
func TestTracesKeepEverything(t *testing.T) {
	api := capture(t, "json-otel017-api")
	td := ptrace.NewTraces()
	var spans []*Span
	for _, p := range api {
		s, err := Decode(p)
		if err != nil {
			t.Fatal(err)
		}
		spans = append(spans, s)
		if err := s.AppendTo(td, "kata-agent"); err != nil {
			t.Fatal(err)
		}
	}
	if td.SpanCount() != 6 {
		t.Fatalf("%d spans", td.SpanCount())
	}
	for i := range td.ResourceSpans().Len() {
		rs := td.ResourceSpans().At(i)
		if v, _ := rs.Resource().Attributes().Get("service.name"); v.Str() != "kata-agent" {
			t.Errorf("service.name %q: unknown_service must become the trace name", v.Str())
		}
		sp := rs.ScopeSpans().At(0).Spans().At(0)
		s := spans[i]
		if sp.Name() != s.Name || [16]byte(sp.TraceID()) != s.TraceID || sp.Attributes().Len() != len(s.Attributes) ||
			sp.Events().Len() != len(s.Events) || sp.Links().Len() != len(s.Links) {
			t.Fatalf("span %d: %s, %d attributes, %d events, %d links; want %+v", i, sp.Name(), sp.Attributes().Len(), sp.Events().Len(), sp.Links().Len(), s)
		}
		start, _ := s.Start.UnixNano()
		if uint64(sp.StartTimestamp()) != start {
			t.Fatalf("span %d starts at %d, want %d (to the nanosecond)", i, sp.StartTimestamp(), start)
		}
		if s.ParentSpanID == 0 != sp.ParentSpanID().IsEmpty() {
			t.Fatalf("span %d: parent %x vs %v", i, s.ParentSpanID, sp.ParentSpanID())
		}
		if v, ok := sp.Attributes().Get("floats"); ok && (v.Slice().Len() != 2 || v.Slice().At(1).Double() != 1.5) {
			t.Fatalf("span %d: floats %v", i, v.AsRaw())
		}
	}
	// A resource that names its service keeps it.
	named := &Span{Name: "x", HasResource: true, Resource: []KeyValue{{"service.name", Value{Type: TypeString, Str: "agent-x"}}}}
	td2, err := named.Traces("kata-agent")
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := td2.ResourceSpans().At(0).Resource().Attributes().Get("service.name"); v.Str() != "agent-x" {
		t.Fatalf("service.name %q", v.Str())
	}
}

var badPayloads = []struct {
	name string
	in   []byte
	want string
}{
	{"empty", nil, "ends early"},
	{"bincode cut short", []byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 1}, "ends early"},
	{"not JSON", []byte("{nope"), "JSON span"},
	{"JSON without ids", []byte(`{"name":"x"}`), "no span_context"},
	{"trace id too large", []byte(`{"span_context":{"trace_id":340282366920938463463374607431768211456,"span_id":1,"trace_flags":1,"is_remote":false,"trace_state":null}}`), "128-bit"},
	{"negative span id", []byte(`{"span_context":{"trace_id":1,"span_id":-1,"trace_flags":1,"is_remote":false,"trace_state":null}}`), "64-bit"},
	{"float trace id", []byte(`{"span_context":{"trace_id":1.5,"span_id":1,"trace_flags":1,"is_remote":false,"trace_state":null}}`), "128-bit"},
	{"two values", []byte(`{} {}`), "more than one"},
}

func TestBadPayloads(t *testing.T) {
	for _, tt := range badPayloads {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Decode(tt.in)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Decode = %v, want an error with %q", err, tt.want)
			}
		})
	}
	// Every cut of a real bincode frame is an error, never a span or a panic.
	p := capture(t, "bincode-otel014-api")[1]
	for i := range len(p) {
		if _, err := DecodeBincode(p[:i]); err == nil {
			t.Fatalf("%d of %d bytes decoded", i, len(p))
		}
	}
	// A length the payload cannot hold is refused before it is allocated.
	huge := bytes.Clone(p)
	binary.LittleEndian.PutUint64(huge[16+8+1+1+1+8+4:], 1<<62) // the name's length
	if _, err := DecodeBincode(huge); err == nil || !strings.Contains(err.Error(), "exceeds the payload") {
		t.Fatalf("huge name length: %v", err)
	}
}

// TestBincodeAnyFirstByte: a bincode span begins with its trace id's
// lowest byte, which may be anything, '{' among them: every frame of the
// bincode captures, its trace id's first byte set to each value, decodes
// as bincode to the reference's span with that trace id, and the stream
// reads whole.
func TestBincodeAnyFirstByte(t *testing.T) {
	for _, name := range captures {
		if !strings.HasPrefix(name, "bincode") {
			continue
		}
		t.Run(name, func(t *testing.T) {
			ps, want := capture(t, name), references(t, name)
			for v := range 256 {
				var stream []byte
				for i, p := range katatest.WithFirstByte(ps, byte(v)) {
					s, err := Decode(p)
					if err != nil {
						t.Fatalf("first byte %#02x, frame %d: %v", v, i, err)
					}
					ref, err := DecodeJSON(want[i])
					if err != nil {
						t.Fatal(err)
					}
					ref.HasResource, ref.TraceID[15] = false, byte(v)
					if !reflect.DeepEqual(s, ref) {
						t.Fatalf("first byte %#02x, frame %d:\n got %+v\nwant %+v", v, i, s, ref)
					}
					stream = append(binary.BigEndian.AppendUint64(stream, uint64(len(p))), p...)
				}
				r := NewReader(bytes.NewReader(stream), 1<<20)
				if got, err := readAll(t, r); len(got) != len(ps) || err != io.EOF {
					t.Fatalf("first byte %#02x: the stream read %d frames, %v", v, len(got), err)
				}
			}
		})
	}
}

func fuzzSeeds(f *testing.F) {
	for _, name := range captures {
		for _, p := range capture(f, name) {
			f.Add(p)
		}
		if strings.HasPrefix(name, "bincode") {
			for _, p := range katatest.WithFirstByte(capture(f, name), '{') {
				f.Add(p)
			}
		}
	}
	for _, tt := range badPayloads {
		f.Add(tt.in)
	}
}

// FuzzDecode: any payload decodes to a span whose pdata form can be made,
// or to an error; never a panic or an allocation the payload cannot back.
// The span's OTLP bytes, made straight from it, are what the model makes
// of it.
func FuzzDecode(f *testing.F) {
	fuzzSeeds(f)
	f.Fuzz(func(t *testing.T, p []byte) {
		s, err := Decode(p)
		if err != nil {
			return
		}
		// The forwarder's way: the payload borrowed, into a span reused
		// (here after a span of each capture) says the same.
		reused := &Span{}
		for _, name := range captures {
			_ = decodeInto(reused, capture(t, name)[5], true)
		}
		if err := decodeInto(reused, bytes.Clone(p), true); err != nil || fmt.Sprintf("%+v", reused) != fmt.Sprintf("%+v", s) {
			t.Fatalf("borrowed and reused: %+v, %v; copied, fresh: %+v", reused, err, s)
		}
		body, err := toOTLP(p, "kata-agent", "sb", testAdds)
		if _, err2 := s.Traces("kata-agent"); err2 != nil {
			if err == nil {
				t.Fatalf("the model refuses the span (%v), OTLP takes it", err2)
			}
			return
		}
		want := viaModel(t, s, "kata-agent", "sb", testAdds)
		if got := direct(t, s, "kata-agent", "sb", testAdds); got != want {
			t.Fatalf("OTLP straight from the span:\n got %s\nwant %s", got, want)
		}
		if err != nil {
			t.Fatalf("the forwarder's way: %v", err)
		}
		if got := readBack(t, body); got != want {
			t.Fatalf("the forwarder's way:\n got %s\nwant %s", got, want)
		}
	})
}

// FuzzDecodeBincode drives the bincode decoder alone (Decode tries a
// payload beginning {"span_context": as JSON first).
func FuzzDecodeBincode(f *testing.F) {
	fuzzSeeds(f)
	f.Fuzz(func(t *testing.T, p []byte) {
		if s, err := DecodeBincode(p); err == nil {
			_, _ = s.Traces("kata-agent")
		}
	})
}

type chunkReader struct {
	b []byte
	n int
}

func (r *chunkReader) Read(p []byte) (int, error) {
	if len(r.b) == 0 {
		return 0, io.EOF
	}
	n := copy(p[:min(len(p), r.n)], r.b)
	r.b = r.b[n:]
	return n, nil
}

// BenchmarkDecode: one span from its payload to an OTLP request's bytes,
// per form, as the forwarder makes them for an OTLP endpoint (toOTLP:
// Sink.Send but the queue); model-* the same through the OpenTelemetry
// model (pdata), as it goes to other sinks.
func BenchmarkDecode(b *testing.B) {
	for _, name := range []string{"json-otel017-api", "bincode-otel014-api"} {
		p := capture(b, name)[0]
		b.Run(name, func(b *testing.B) {
			b.SetBytes(int64(len(p)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := toOTLP(p, "kata-agent", "sb", testAdds); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run("model-"+name, func(b *testing.B) {
			b.SetBytes(int64(len(p)))
			b.ReportAllocs()
			for b.Loop() {
				s, err := Decode(p)
				if err != nil {
					b.Fatal(err)
				}
				td, err := s.Traces("kata-agent")
				if err != nil {
					b.Fatal(err)
				}
				if _, err := ptraceotlp.NewExportRequestFromTraces(td).MarshalProto(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func TestJSONValues(t *testing.T) {
	for _, tt := range []struct {
		in, want string // want: the value's type and text, or an error's words
	}{
		{`{"I64":-3}`, "I64 -3"},
		{`{"F64":1.5}`, "F64 1.5"},
		{`{"F64":null}`, "F64 NaN"},
		{`{"String":"x"}`, `String "x"`},
		{`{"Bool":false}`, "Bool false"},
		{`{"Array":{"F64":[0.5,null]}}`, "Array(F64) [0.5 NaN]"},
		{`{"Array":{"String":[]}}`, "Array(String) []"},
		{`{"Foo":1}`, "exactly one"},
		{`{"I64":1,"Bool":true}`, "exactly one"},
		{`{"Array":{}}`, "exactly one"},
		{`{"Array":{"I64":null}}`, "exactly one"},
		{`{"I64":"1"}`, "a number"},
		{`{"I64":1.5}`, "not a 64-bit integer"},
		{`{"F64":1e999}`, "out of range"},
		{`{"String":"a\u00e9\ud83d\ude00\ud800"}`, "String \"aé😀\uFFFD\""},
		{`{"String":"a\x"}`, "unknown escape"},
		{`{"Array":{"Bool":[true,null]}}`, "true or false"},
		{`{"Array":{"I64":[1],"String":["a"]}}`, "exactly one"},
		{`{"I64":01}`, "leading zero"},
	} {
		var v Value
		d := jsonDecoder{b: []byte(tt.in)}
		err := d.value(&v)
		got := v.Type.String() + " " + v.String()
		if err != nil {
			got = err.Error()
		}
		if !strings.Contains(got, tt.want) {
			t.Errorf("%s: %s, want %s", tt.in, got, tt.want)
		}
	}
}
