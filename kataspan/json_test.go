package kataspan

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"math/big"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

// FuzzJSONRoundTrip: a span written as serde_json writes SpanData (keys in
// any order, white space anywhere, strings escaped by encoding/json) reads
// back as exactly that span: ids to the last bit of a u128, strings as
// encoding/json reads them.
func FuzzJSONRoundTrip(f *testing.F) {
	f.Add(uint64(0xd5549796b885246c), uint64(0x67389f3b2fa247d1), uint64(math.MaxUint64), "root-span", "mod", "rpc.rs", int64(-3), 1.5, uint8(0), false)
	f.Add(uint64(0), uint64(1), uint64(1<<63), "a\"\\\x01é\u2028", "\xff", "\xed\xa0\xbd", int64(math.MinInt64), math.Inf(1), uint8(7), true)
	f.Fuzz(func(t *testing.T, hi, lo, sid uint64, name, key, str string, i int64, fl float64, shape uint8, spaced bool) {
		want := &Span{SpanID: sid, ParentSpanID: lo, Kind: Kind(shape % 5), Status: StatusCode(shape % 3),
			Start: Time{hi, uint32(lo % 1e9)}, End: Time{lo, uint32(hi % 1e9)}, TraceFlags: shape,
			Name: asJSONReads(t, name), StatusMessage: asJSONReads(t, str), Attributes: []KeyValue{}}
		for k := range 8 {
			want.TraceID[k], want.TraceID[8+k] = byte(hi>>(56-8*k)), byte(lo>>(56-8*k))
		}
		if math.IsNaN(fl) || math.IsInf(fl, 0) {
			fl = math.NaN() // serde_json writes null, read as NaN
		}
		values := []Value{{Type: TypeString, Str: asJSONReads(t, str)}, {Type: TypeInt, Int: i}, {Type: TypeFloat, Float: fl},
			{Type: TypeBool, Bool: spaced}, {Type: TypeIntArray, Ints: []int64{i, 0}}, {Type: TypeStringArray, Strings: []string{asJSONReads(t, key)}},
			{Type: TypeFloatArray, Floats: []float64{fl}}, {Type: TypeBoolArray, Bools: []bool{}}}
		for k, v := range values[:1+int(shape)%len(values)] {
			want.Attributes = append(want.Attributes, KeyValue{Key: asJSONReads(t, key) + strconv.Itoa(k), Value: v})
		}
		sortKeyValues(want.Attributes)
		if shape&8 != 0 {
			want.Events = []Event{{Name: asJSONReads(t, name), Time: Time{1, 2}, Attributes: []KeyValue{{Key: asJSONReads(t, key), Value: values[1]}}}}
		}
		if shape&16 != 0 {
			want.HasResource, want.Resource = true, []KeyValue{{Key: "service.name", Value: values[0]}}
		}
		if shape&32 != 0 {
			want.TraceState = []KeyString{{asJSONReads(t, key), asJSONReads(t, str)}}
		}
		p := writeJSON(want, shape&64 != 0, spaced)
		got, err := DecodeJSON(p)
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		if !reflect.DeepEqual(got, want) && !sameWithNaN(got, want) {
			t.Fatalf("%s:\n got %+v\nwant %+v", p, got, want)
		}
	})
}

// asJSONReads is s as JSON carries it: encoding/json's reading of its
// writing (invalid UTF-8 as U+FFFD).
func asJSONReads(t *testing.T, s string) string {
	b, _ := json.Marshal(s)
	var out string
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

// sameWithNaN compares spans whose floats may be NaN (never equal).
func sameWithNaN(a, b *Span) bool {
	return fmt.Sprintf("%+v", a) == fmt.Sprintf("%+v", b)
}

// writeJSON writes s as serde_json writes SpanData (0.17), its members in
// reverse order when reversed, with white space around every token when
// spaced.
func writeJSON(s *Span, reversed, spaced bool) []byte {
	sp := ""
	if spaced {
		sp = " \n\t"
	}
	q := func(v string) string { b, _ := json.Marshal(v); return string(b) }
	obj := func(members ...string) string {
		if reversed {
			for i, j := 0, len(members)-1; i < j; i, j = i+1, j-1 {
				members[i], members[j] = members[j], members[i]
			}
		}
		var b bytes.Buffer
		b.WriteString("{" + sp)
		for i, m := range members {
			if i > 0 {
				b.WriteString(sp + "," + sp)
			}
			b.WriteString(m)
		}
		b.WriteString(sp + "}")
		return b.String()
	}
	member := func(k, v string) string { return q(k) + sp + ":" + sp + v }
	float := func(f float64) string {
		if math.IsNaN(f) || math.IsInf(f, 0) {
			return "null"
		}
		return strconv.FormatFloat(f, 'g', -1, 64)
	}
	list := func(items []string) string {
		var b bytes.Buffer
		b.WriteString("[" + sp)
		for i, it := range items {
			if i > 0 {
				b.WriteString("," + sp)
			}
			b.WriteString(it)
		}
		return b.String() + sp + "]"
	}
	value := func(v Value) string {
		var items []string
		switch v.Type {
		case TypeString:
			return obj(member("String", q(v.Str)))
		case TypeInt:
			return obj(member("I64", strconv.FormatInt(v.Int, 10)))
		case TypeFloat:
			return obj(member("F64", float(v.Float)))
		case TypeBool:
			return obj(member("Bool", strconv.FormatBool(v.Bool)))
		case TypeIntArray:
			for _, n := range v.Ints {
				items = append(items, strconv.FormatInt(n, 10))
			}
			return obj(member("Array", obj(member("I64", list(items)))))
		case TypeStringArray:
			for _, x := range v.Strings {
				items = append(items, q(x))
			}
			return obj(member("Array", obj(member("String", list(items)))))
		case TypeFloatArray:
			for _, x := range v.Floats {
				items = append(items, float(x))
			}
			return obj(member("Array", obj(member("F64", list(items)))))
		default:
			for _, x := range v.Bools {
				items = append(items, strconv.FormatBool(x))
			}
			return obj(member("Array", obj(member("Bool", list(items)))))
		}
	}
	tm := func(t Time) string {
		return obj(member("secs_since_epoch", strconv.FormatUint(t.Secs, 10)), member("nanos_since_epoch", strconv.FormatUint(uint64(t.Nanos), 10)))
	}
	ts := "null"
	if s.TraceState != nil {
		var items []string
		for _, e := range s.TraceState {
			items = append(items, list([]string{q(e.Key), q(e.Value)}))
		}
		ts = list(items)
	}
	var attrs []string
	for _, kv := range s.Attributes {
		attrs = append(attrs, member(kv.Key, value(kv.Value)))
	}
	events := "null"
	if s.Events != nil {
		var items []string
		for _, e := range s.Events {
			var as []string
			for _, kv := range e.Attributes {
				as = append(as, obj(member("key", q(kv.Key)), member("value", value(kv.Value))))
			}
			items = append(items, obj(member("name", q(e.Name)), member("timestamp", tm(e.Time)), member("attributes", list(as)), member("dropped_attributes_count", "0")))
		}
		events = list(items)
	}
	resource := "null"
	if s.HasResource {
		var rs []string
		for _, kv := range s.Resource {
			rs = append(rs, member(kv.Key, value(kv.Value)))
		}
		resource = obj(member("attrs", obj(rs...)))
	}
	return []byte(sp + obj(
		member("span_context", obj(member("trace_id", new(big.Int).SetBytes(s.TraceID[:]).String()), member("span_id", strconv.FormatUint(s.SpanID, 10)),
			member("trace_flags", strconv.Itoa(int(s.TraceFlags))), member("is_remote", "false"), member("trace_state", ts))),
		member("parent_span_id", strconv.FormatUint(s.ParentSpanID, 10)),
		member("span_kind", q(s.Kind.String())),
		member("name", q(s.Name)),
		member("start_time", tm(s.Start)),
		member("end_time", tm(s.End)),
		member("attributes", obj(member("map", obj(attrs...)), member("evict_list", "[]"), member("max_len", "128"), member("dropped_count", "0"))),
		member("events", obj(member("queue", events), member("max_len", "128"), member("dropped_count", "0"))),
		member("links", obj(member("queue", "null"), member("max_len", "128"), member("dropped_count", "0"))),
		member("status_code", q(s.Status.String())),
		member("status_message", q(s.StatusMessage)),
		member("resource", resource),
	) + sp)
}

// TestJSONSkipsWhatItDoesNotKnow: a field the span does not know is read
// through, whatever it holds, and must still be JSON, nested within
// bounds.
func TestJSONSkipsWhatItDoesNotKnow(t *testing.T) {
	p := capture(t, "json-otel017-api")[0]
	want, err := DecodeJSON(p)
	if err != nil {
		t.Fatal(err)
	}
	with := func(v string) []byte { return append([]byte(`{"x":`+v+`,`), p[1:]...) }
	deep := strings.Repeat("[", maxDepth) + strings.Repeat("]", maxDepth)
	for _, tt := range []struct{ value, err string }{
		{`{"a":[1,-2.5e3,"s\"",true,false,null,{},[],{"b":{"c":[[]]}}],"d":"\u00e9"}`, ""},
		{deep, ""},
		{"[" + deep + "]", "nested more than"},
		{`{"a" 1}`, "':'"},
		{`{"a":1,}`, "a key"},
		{`[1 2]`, "',' or ']'"},
		{`[1,]`, "a value"},
		{`{1:2}`, "a key"},
		{`nul`, "a value"},
		{`"a`, "',' or '}'"},
		{`01`, "leading zero"},
		{`-`, "a number"},
		{`[`, "a value"},
	} {
		t.Run(tt.value, func(t *testing.T) {
			got, err := DecodeJSON(with(tt.value))
			switch {
			case tt.err == "" && err != nil:
				t.Fatal(err)
			case tt.err == "" && !reflect.DeepEqual(got, want):
				t.Fatalf("got %+v", got)
			case tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)):
				t.Fatalf("err %v, want %q", err, tt.err)
			}
		})
	}
	if _, err := DecodeJSON(append(bytes.Clone(p), "\x00junk"...)); err == nil || !strings.Contains(err.Error(), "more than one value") {
		t.Errorf("a span, then a NUL and junk: %v", err)
	}
	if _, err := DecodeJSON(append([]byte(`{"x":`+"\x00"), p[1:]...)); err == nil || !strings.Contains(err.Error(), "byte 0x00") {
		t.Errorf("a NUL where a value should be: %v, want the byte named", err)
	}
	// A resource's attrs of null is none, read as no attribute (it was
	// taken for a field to skip, and the comma after it for its value).
	nullAttrs := bytes.Replace(p, []byte(`"resource":{"attrs":{"service.name":{"String":"unknown_service"}}}`), []byte(`"resource":{"attrs":null}`), 1)
	if bytes.Equal(nullAttrs, p) {
		t.Fatal("the capture's resource is not where the test looks for it")
	}
	if s, err := DecodeJSON(nullAttrs); err != nil || !s.HasResource || len(s.Resource) != 0 {
		t.Errorf("a resource of null attrs: %v", err)
	}
	for _, cut := range []string{`{"x":[`, `{"x":"a`, `{"x":{"a"`, `{"x":-`} {
		if _, err := DecodeJSON([]byte(cut)); err == nil || !strings.Contains(err.Error(), "ends") {
			t.Errorf("%s: %v, want the payload's end said", cut, err)
		}
	}
}

// TestJSONLargeSpan: a span past the decoder's reuse bounds (a payload
// over 64 KiB, a map over 256 keys) reads back whole, copied or borrowed.
func TestJSONLargeSpan(t *testing.T) {
	want := &Span{Name: strings.Repeat("n", 70<<10), Attributes: make([]KeyValue, 300), Start: Time{1, 2}, End: Time{3, 4}}
	for i := range want.Attributes {
		want.Attributes[i] = KeyValue{Key: fmt.Sprintf("k%03d", i), Value: Value{Type: TypeInt, Int: int64(i)}}
	}
	p := writeJSON(want, false, false)
	borrowed := func(p []byte) (*Span, error) {
		s, _ := Decode(capture(t, "json-otel017-api")[0]) // arrays to reuse
		return s, decodeInto(s, p, true)
	}
	for _, decode := range []func([]byte) (*Span, error){Decode, borrowed} {
		got, err := decode(p)
		if err != nil {
			t.Fatal(err)
		}
		// (A reused span's empty lists may be empty where a fresh one's
		// are nil.)
		if fmt.Sprintf("%+v", got) != fmt.Sprintf("%+v", want) {
			t.Fatalf("got %d attributes, name of %d bytes", len(got.Attributes), len(got.Name))
		}
	}
}

// TestJSONUnsigned: unsigned integers are read exactly to their bound, by
// hand or by strconv, and refused past it.
func TestJSONUnsigned(t *testing.T) {
	for _, tt := range []struct {
		in   string
		bits int
		want uint64
		err  string
	}{
		{"0", 8, 0, ""}, {"255", 8, 255, ""}, {"256", 8, 0, "unsigned 8-bit"},
		{"4294967295", 32, 1<<32 - 1, ""}, {"4294967296", 32, 0, "unsigned 32-bit"},
		{"9999999999999999999", 64, 9999999999999999999, ""}, {"18446744073709551615", 64, math.MaxUint64, ""},
		{"18446744073709551616", 64, 0, "unsigned 64-bit"}, {"-1", 64, 0, "unsigned 64-bit"},
		{"1.5", 64, 0, "unsigned 64-bit"}, {"1e3", 32, 0, "unsigned 32-bit"}, {"00", 8, 0, "leading zero"},
	} {
		t.Run(tt.in, func(t *testing.T) {
			d := jsonDecoders.Get().(*jsonDecoder)
			defer jsonDecoders.Put(d)
			d.b, d.s, d.i = []byte(tt.in), "", 0
			got, err := d.uint(tt.bits)
			if tt.err == "" && (err != nil || got != tt.want) || tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)) {
				t.Fatalf("%d, %v; want %d, %q", got, err, tt.want, tt.err)
			}
		})
	}
}
