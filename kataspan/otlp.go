package kataspan

import (
	"fmt"
	"math"
	"slices"

	"github.com/katatrace/katatrace/sink"
	"google.golang.org/protobuf/encoding/protowire"
)

// AppendOTLP appends the span to dst as one resource_spans field of an
// OTLP ExportTraceServiceRequest (opentelemetry-proto's
// collector/trace/v1): requests concatenate, so dst may already hold
// others. It is what Traces and ptraceotlp make, without the model
// between: the resource is the span's, its service named service where
// it names none (as Traces does), sandbox_id set where absent, and the
// sink's attributes added (adds.Set replacing the span's of their key,
// adds.Default where it has none). Attribute keys are unique, as OTLP
// requires: of a key given twice, the first place and the last value
// stay (as pdata's Map puts them).
func (s *Span) AppendOTLP(dst []byte, service, sandbox string, adds sink.ResourceAdds) ([]byte, error) {
	start, err := s.Start.UnixNano()
	if err != nil {
		return dst, fmt.Errorf("start_time: %w", err)
	}
	end, err := s.End.UnixNano()
	if err != nil {
		return dst, fmt.Errorf("end_time: %w", err)
	}
	for i, e := range s.Events { // checked before anything is written
		if _, err := e.Time.UnixNano(); err != nil {
			return dst, fmt.Errorf("event %d: %w", i, err)
		}
	}
	b, rs := openField(dst, 1) // ExportTraceServiceRequest.resource_spans
	b, res := openField(b, 1)  // ResourceSpans.resource
	b = appendResource(b, s.Resource, service, sandbox, adds)
	b = closeField(b, res)
	b, ss := openField(b, 2) // ResourceSpans.scope_spans
	b, sp := openField(b, 2) // ScopeSpans.spans
	b = appendSpan(b, s, start, end)
	b = closeField(b, sp)
	b = closeField(b, ss)
	return closeField(b, rs), nil
}

// appendResource appends Resource.attributes: the span's resource with
// its service named, then what is missing of service.name, sandbox_id,
// adds.Set and adds.Default, each key once.
func appendResource(b []byte, own []KeyValue, service, sandbox string, adds sink.ResourceAdds) []byte {
	own = uniqueKeys(own)
	var hasService, hasSandbox bool
	for _, kv := range own {
		v := kv.Value
		switch {
		case kv.Key == "service.name":
			hasService = true
			if v.Type != TypeString || namesNoService(v.Str) {
				v = Value{Type: TypeString, Str: service}
			}
		case kv.Key == SandboxKey:
			hasSandbox = true
		}
		if a, ok := findAttr(adds.Set, kv.Key); ok {
			v = Value{Type: TypeString, Str: a.Value}
		}
		b = appendKeyValue(b, 1, kv.Key, v)
	}
	if !hasService {
		b = appendStringKeyValue(b, "service.name", service)
	}
	if !hasSandbox && sandbox != "" {
		b = appendStringKeyValue(b, SandboxKey, sandbox)
	}
	has := func(key string) bool {
		return key == "service.name" || key == SandboxKey && sandbox != "" ||
			slices.ContainsFunc(own, func(kv KeyValue) bool { return kv.Key == key })
	}
	for i, a := range adds.Set {
		if !has(a.Key) && !containsAttr(adds.Set[:i], a.Key) {
			b = appendStringKeyValue(b, a.Key, a.Value)
		}
	}
	for i, a := range adds.Default {
		if !has(a.Key) && !containsAttr(adds.Set, a.Key) && !containsAttr(adds.Default[:i], a.Key) {
			b = appendStringKeyValue(b, a.Key, a.Value)
		}
	}
	return b
}

func findAttr(as []sink.Attr, key string) (sink.Attr, bool) {
	for _, a := range as {
		if a.Key == key {
			return a, true
		}
	}
	return sink.Attr{}, false
}

func containsAttr(as []sink.Attr, key string) bool { _, ok := findAttr(as, key); return ok }

// appendSpan appends a Span message's fields (opentelemetry-proto's
// trace/v1), proto3's zero values left out as the model's encoder does.
func appendSpan(b []byte, s *Span, start, end uint64) []byte {
	b = appendTag(b, 1, protowire.BytesType)
	b = protowire.AppendBytes(b, s.TraceID[:])
	b = appendSpanID(b, 2, s.SpanID)
	if len(s.TraceState) > 0 {
		b = appendString(b, 3, traceStateString(s.TraceState))
	}
	if s.ParentSpanID != 0 {
		b = appendSpanID(b, 4, s.ParentSpanID)
	}
	if s.Name != "" {
		b = appendString(b, 5, s.Name)
	}
	if int(s.Kind) < len(spanKinds) {
		b = appendVarint(b, 6, uint64(spanKinds[s.Kind])) // the model's numbers are OTLP's
	}
	b = appendFixed64(b, 7, start)
	b = appendFixed64(b, 8, end)
	for _, kv := range uniqueKeys(s.Attributes) {
		b = appendKeyValue(b, 9, kv.Key, kv.Value)
	}
	b = appendVarint(b, 10, uint64(s.DroppedAttributes))
	for _, e := range s.Events {
		var at int
		b, at = openField(b, 11)
		t, _ := e.Time.UnixNano() // checked by AppendOTLP
		b = appendFixed64(b, 1, t)
		if e.Name != "" {
			b = appendString(b, 2, e.Name)
		}
		for _, kv := range uniqueKeys(e.Attributes) {
			b = appendKeyValue(b, 3, kv.Key, kv.Value)
		}
		b = appendVarint(b, 4, uint64(e.DroppedAttributes))
		b = closeField(b, at)
	}
	b = appendVarint(b, 12, uint64(s.DroppedEvents))
	for _, l := range s.Links {
		var at int
		b, at = openField(b, 13)
		b = appendTag(b, 1, protowire.BytesType)
		b = protowire.AppendBytes(b, l.TraceID[:])
		b = appendSpanID(b, 2, l.SpanID)
		if len(l.TraceState) > 0 {
			b = appendString(b, 3, traceStateString(l.TraceState))
		}
		for _, kv := range uniqueKeys(l.Attributes) {
			b = appendKeyValue(b, 4, kv.Key, kv.Value)
		}
		b = appendVarint(b, 5, uint64(l.DroppedAttributes))
		flags := uint32(l.TraceFlags) | otlpHasIsRemote
		if l.IsRemote {
			flags |= otlpIsRemote
		}
		b = appendTag(b, 6, protowire.Fixed32Type)
		b = protowire.AppendFixed32(b, flags)
		b = closeField(b, at)
	}
	b = appendVarint(b, 14, uint64(s.DroppedLinks))
	if code := otlpStatus(s.Status); code != 0 || s.StatusMessage != "" {
		var at int
		b, at = openField(b, 15)
		if s.StatusMessage != "" {
			b = appendString(b, 2, s.StatusMessage)
		}
		b = appendVarint(b, 3, code)
		b = closeField(b, at)
	}
	if s.TraceFlags != 0 {
		b = appendTag(b, 16, protowire.Fixed32Type)
		b = protowire.AppendFixed32(b, uint32(s.TraceFlags))
	}
	return b
}

// otlpStatus is Status.StatusCode's number (the model's is OTLP's).
func otlpStatus(s StatusCode) uint64 {
	if int(s) < len(statusCodes) {
		return uint64(statusCodes[s])
	}
	return 0
}

// appendKeyValue appends a KeyValue field: its key, and its value as an
// AnyValue (a oneof: a zero value is written, its kind being the value).
func appendKeyValue(b []byte, num protowire.Number, key string, v Value) []byte {
	b, at := openField(b, num)
	b = appendString(b, 1, key)
	b, val := openField(b, 2)
	switch v.Type {
	case TypeBool:
		b = appendBool(b, v.Bool)
	case TypeInt:
		b = appendInt(b, v.Int)
	case TypeFloat:
		b = appendDouble(b, v.Float)
	case TypeString:
		b = appendString(b, 1, v.Str)
	default:
		var arr int
		b, arr = openField(b, 5) // AnyValue.array_value
		switch v.Type {
		// ArrayValue.values, each an AnyValue of a few bytes, its length
		// known: one byte.
		case TypeBoolArray:
			for _, x := range v.Bools {
				b = appendBool(append(b, 0x0a, 2), x)
			}
		case TypeIntArray:
			for _, x := range v.Ints {
				b = appendInt(append(b, 0x0a, byte(1+protowire.SizeVarint(uint64(x)))), x)
			}
		case TypeFloatArray:
			for _, x := range v.Floats {
				b = appendDouble(append(b, 0x0a, 9), x)
			}
		case TypeStringArray:
			for _, x := range v.Strings {
				var at int
				b, at = openField(b, 1)
				b = appendString(b, 1, x)
				b = closeField(b, at)
			}
		}
		b = closeField(b, arr)
	}
	b = closeField(b, val)
	return closeField(b, at)
}

func appendStringKeyValue(b []byte, key, value string) []byte {
	return appendKeyValue(b, 1, key, Value{Type: TypeString, Str: value})
}

func appendBool(b []byte, v bool) []byte {
	b = appendTag(b, 2, protowire.VarintType)
	return protowire.AppendVarint(b, protowire.EncodeBool(v))
}

func appendInt(b []byte, v int64) []byte {
	b = appendTag(b, 3, protowire.VarintType)
	return protowire.AppendVarint(b, uint64(v))
}

func appendDouble(b []byte, v float64) []byte {
	b = appendTag(b, 4, protowire.Fixed64Type)
	return protowire.AppendFixed64(b, math.Float64bits(v))
}

func appendString(b []byte, num protowire.Number, s string) []byte {
	b = appendTag(b, num, protowire.BytesType)
	return protowire.AppendString(b, s)
}

// appendVarint appends a scalar field, left out when zero (proto3).
func appendVarint(b []byte, num protowire.Number, v uint64) []byte {
	if v == 0 {
		return b
	}
	b = appendTag(b, num, protowire.VarintType)
	if v < 0x80 {
		return append(b, byte(v))
	}
	return protowire.AppendVarint(b, v)
}

func appendFixed64(b []byte, num protowire.Number, v uint64) []byte {
	b = appendTag(b, num, protowire.Fixed64Type)
	return protowire.AppendFixed64(b, v)
}

func appendSpanID(b []byte, num protowire.Number, id uint64) []byte {
	sid := spanID(id)
	b = appendTag(b, num, protowire.BytesType)
	return protowire.AppendBytes(b, sid[:])
}

// openField begins a length-delimited field, its length written by
// closeField once the content is there: one byte is kept for it, and the
// content moved on where it needs more (a few hundred bytes, once per
// large message, rather than a pass to size every message first).
func openField(b []byte, num protowire.Number) ([]byte, int) {
	b = appendTag(b, num, protowire.BytesType)
	b = append(b, 0)
	return b, len(b)
}

func closeField(b []byte, at int) []byte {
	n := len(b) - at
	if n < 0x80 {
		b[at-1] = byte(n)
		return b
	}
	extra := protowire.SizeVarint(uint64(n)) - 1
	b = slices.Grow(b, extra)[:len(b)+extra]
	copy(b[at+extra:], b[at:at+n])
	protowire.AppendVarint(b[:at-1], uint64(n))
	return b
}

// uniqueKeys is kvs with each key once, in the place it first has and
// with the value it last has; kvs itself when no key repeats (always,
// from a decoder's map).
func uniqueKeys(kvs []KeyValue) []KeyValue {
	if !repeats(kvs) {
		return kvs
	}
	at := make(map[string]int, len(kvs))
	out := make([]KeyValue, 0, len(kvs))
	for _, kv := range kvs {
		if i, ok := at[kv.Key]; ok {
			out[i].Value = kv.Value
			continue
		}
		at[kv.Key] = len(out)
		out = append(out, kv)
	}
	return out
}

// repeats reports whether a key of kvs is there twice, without
// allocating for the lists spans have (a map's, sorted; a few of an
// event's).
func repeats(kvs []KeyValue) bool {
	sorted := true
	for i := 1; i < len(kvs) && sorted; i++ {
		sorted = kvs[i-1].Key < kvs[i].Key
	}
	switch {
	case sorted:
		return false
	case len(kvs) <= 16:
		for i := range kvs {
			for j := i + 1; j < len(kvs); j++ {
				if kvs[i].Key == kvs[j].Key {
					return true
				}
			}
		}
		return false
	}
	seen := make(map[string]struct{}, len(kvs))
	for _, kv := range kvs {
		if _, ok := seen[kv.Key]; ok {
			return true
		}
		seen[kv.Key] = struct{}{}
	}
	return false
}

// appendTag is protowire.AppendTag, a one-byte tag (fields 1 to 15)
// written without a call.
func appendTag(b []byte, num protowire.Number, typ protowire.Type) []byte {
	if num < 16 {
		return append(b, byte(num)<<3|byte(typ))
	}
	return protowire.AppendTag(b, num, typ)
}
