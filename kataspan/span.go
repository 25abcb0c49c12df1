package kataspan

import (
	"fmt"
	"slices"
	"strings"
)

// Span is one span as a Kata agent's exporter sends it: the fields of the
// OpenTelemetry Rust SDK's SpanData that reach the wire, in either form.
// Nothing the payload says is left out, so that what goes on to OTLP or
// Jaeger is what the agent recorded.
type Span struct {
	TraceID    [16]byte // the u128 trace id, big-endian (W3C byte order)
	SpanID     uint64
	TraceFlags uint8
	IsRemote   bool
	// TraceState is the W3C trace state, in order; nil when absent.
	TraceState   []KeyString
	ParentSpanID uint64 // 0: a root span
	Kind         Kind
	Name         string
	Start, End   Time
	Attributes   []KeyValue
	// DroppedAttributes, DroppedEvents and DroppedLinks are what the SDK's
	// limits evicted before export.
	DroppedAttributes uint32
	Events            []Event
	DroppedEvents     uint32
	Links             []Link
	DroppedLinks      uint32
	Status            StatusCode
	StatusMessage     string
	// Resource is the SDK's resource (service.name and the rest); the
	// bincode form of 0.14 sends none (HasResource false).
	Resource    []KeyValue
	HasResource bool
}

// Time is a SystemTime as serde writes it: seconds and nanoseconds since
// the Unix epoch.
type Time struct {
	Secs  uint64
	Nanos uint32
}

// UnixNano is t in nanoseconds, or an error when it does not fit in a
// u64 (OTLP's timestamp) or the nanoseconds are not below a second.
func (t Time) UnixNano() (uint64, error) {
	const maxSecs = (1<<64 - 1) / 1_000_000_000
	ns := t.Secs*1e9 + uint64(t.Nanos)
	if t.Nanos >= 1e9 || t.Secs > maxSecs || ns < t.Secs*1e9 {
		return 0, fmt.Errorf("time %d.%09d s is out of range", t.Secs, t.Nanos)
	}
	return ns, nil
}

// Kind is a span's kind, as opentelemetry's SpanKind.
type Kind uint8

// The kinds, in the Rust enum's declaration order (bincode's index).
const (
	KindClient Kind = iota
	KindServer
	KindProducer
	KindConsumer
	KindInternal
)

var kindNames = [...]string{"Client", "Server", "Producer", "Consumer", "Internal"}

func (k Kind) String() string { return enumName(kindNames[:], uint8(k), "Kind") }

// StatusCode is a span's status.
type StatusCode uint8

// The status codes, in the Rust enum's declaration order.
const (
	StatusUnset StatusCode = iota
	StatusOk
	StatusError
)

var statusNames = [...]string{"Unset", "Ok", "Error"}

func (s StatusCode) String() string { return enumName(statusNames[:], uint8(s), "StatusCode") }

// KeyString is one entry of a trace state.
type KeyString struct{ Key, Value string }

// KeyValue is an attribute.
type KeyValue struct {
	Key   string
	Value Value
}

// Event is a span event (a tracing event, or add_event).
type Event struct {
	Name              string
	Time              Time
	Attributes        []KeyValue
	DroppedAttributes uint32
}

// Link is a link to another span.
type Link struct {
	TraceID           [16]byte
	SpanID            uint64
	TraceFlags        uint8
	IsRemote          bool
	TraceState        []KeyString
	Attributes        []KeyValue
	DroppedAttributes uint32
}

// ValueType says which field of a Value holds it.
type ValueType uint8

// The value types, in the Rust enum's declaration order; the arrays follow
// (Array's own variants, in the same order).
const (
	TypeBool ValueType = iota
	TypeInt
	TypeFloat
	TypeString
	TypeBoolArray
	TypeIntArray
	TypeFloatArray
	TypeStringArray
)

var typeNames = [...]string{"Bool", "I64", "F64", "String", "Array(Bool)", "Array(I64)", "Array(F64)", "Array(String)"}

func (t ValueType) String() string { return enumName(typeNames[:], uint8(t), "ValueType") }

// Value is an attribute's value: one of the scalar fields, or one array.
type Value struct {
	Type    ValueType
	Bool    bool
	Int     int64
	Float   float64
	Str     string
	Bools   []bool
	Ints    []int64
	Floats  []float64
	Strings []string
}

func (v Value) String() string {
	switch v.Type {
	case TypeBool:
		return fmt.Sprint(v.Bool)
	case TypeInt:
		return fmt.Sprint(v.Int)
	case TypeFloat:
		return fmt.Sprint(v.Float)
	case TypeString:
		return fmt.Sprintf("%q", v.Str)
	case TypeBoolArray:
		return fmt.Sprint(v.Bools)
	case TypeIntArray:
		return fmt.Sprint(v.Ints)
	case TypeFloatArray:
		return fmt.Sprint(v.Floats)
	case TypeStringArray:
		return fmt.Sprintf("%q", v.Strings)
	}
	return v.Type.String()
}

// traceStateString is the W3C header form of a trace state.
func traceStateString(ts []KeyString) string {
	var b strings.Builder
	for i, e := range ts {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(e.Key)
		b.WriteByte('=')
		b.WriteString(e.Value)
	}
	return b.String()
}

// sortKeyValues orders a map's attributes by key: the SDK's HashMap has
// no order of its own, and a stable one makes equal spans equal.
func sortKeyValues(kvs []KeyValue) {
	slices.SortFunc(kvs, func(a, b KeyValue) int { return strings.Compare(a.Key, b.Key) })
}

// enumName is a variant's name, or the type and number of one unknown.
func enumName(names []string, i uint8, typ string) string {
	if int(i) < len(names) {
		return names[i]
	}
	return fmt.Sprintf("%s(%d)", typ, i)
}

// A Span decoded into again (a transient one: the OTLP path's) keeps its
// slices' arrays: reset, emptied, reserve and grow keep them, and the
// events' and links' own attribute arrays with them. A fresh span's
// empty lists are empty, not nil, as the bincode decoder makes them.

// reset empties s but for its slices' arrays.
func (s *Span) reset() {
	*s = Span{Attributes: s.Attributes[:0], Events: s.Events[:0], Links: s.Links[:0], Resource: s.Resource[:0]}
}

// emptied is xs without its elements, never nil.
func emptied[T any](xs []T) []T {
	if xs == nil {
		return []T{}
	}
	return xs[:0]
}

// reserve is xs emptied, with room for n, never nil.
func reserve[T any](xs []T, n int) []T {
	if xs == nil || cap(xs) < n {
		return make([]T, 0, n)
	}
	return xs[:0]
}

// grow is xs with one more element: the one its array held there before,
// if any (its own arrays are reused by the caller), else a zero one.
func grow[T any](xs []T) []T {
	if len(xs) < cap(xs) {
		return xs[:len(xs)+1]
	}
	var zero T
	return append(xs, zero)
}
