package kataspan

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"unicode/utf8"
)

// DecodeBincode reads the payload that Kata agents 2.2 to 3.28 send:
// bincode 1.x (default options) of opentelemetry 0.14's SpanData. Its
// fields, in declaration order: span_context (trace_id u128, span_id u64,
// trace_flags u8, is_remote bool, trace_state Option<VecDeque<(String,
// String)>>), parent_span_id u64, span_kind (u32 variant), name,
// start_time and end_time (u64 seconds, u32 nanoseconds), attributes
// (EvictedHashMap: map, evict_list, max_len u32, dropped_count u32),
// message_events and links (EvictedQueue: Option<VecDeque>, max_len,
// dropped_count), status_code (u32 variant), status_message, resource
// (Option<Resource>). Integers are little-endian and fixed-width; strings
// and sequences carry a u64 length; Option is a u8 tag.
func DecodeBincode(p []byte) (*Span, error) {
	s := &Span{}
	if err := decodeBincode(s, p, false); err != nil {
		return nil, err
	}
	return s, nil
}

// decodeBincode reads p into s, reusing the arrays s holds (Span.reset).
func decodeBincode(s *Span, p []byte, borrow bool) error {
	d := &bincode{b: p, rem: len(p), s: payloadString(p, borrow)}
	s.reset()
	d.span(s)
	if d.err == nil && d.rem > 0 {
		d.fail("%d bytes after the span", d.rem)
	}
	if d.err != nil {
		return fmt.Errorf("bincode span: %w (at byte %d of %d)", d.err, d.at, len(p))
	}
	return nil
}

// bincodePrefix checks the first bytes of what may be a bincode span of n
// bytes, field by field, as far as they go: errMore when they hold a
// span's beginning but not all of it, nil when they hold all of it
// (exactly n bytes), any other error where no span of n bytes could
// begin so.
func bincodePrefix(p []byte, n int) error {
	d := &bincode{b: p[:min(len(p), n)], rem: n}
	d.span(&Span{})
	if d.err == nil && d.rem > 0 {
		d.fail("%d bytes after the span", d.rem)
	}
	return d.err
}

// bincode is a reader that remembers its first error; after one, every
// read returns zero values. b holds what there is of the payload, rem
// what the payload has left, b's bytes and those not yet there: a field
// beyond rem is an error (errShort), one beyond b only wants more
// (errMore).
type bincode struct {
	b   []byte
	rem int
	at  int // bytes read
	err error
	// s is the whole payload as a string, when b holds all of it: its
	// strings are slices of it, one copy for all.
	s string
}

var (
	errShort = errors.New("payload ends early")
	errMore  = errors.New("more of the payload needed")
)

func (d *bincode) fail(format string, args ...any) {
	if d.err == nil {
		d.err = fmt.Errorf(format, args...)
		d.b = nil
	}
}

func (d *bincode) take(n int) []byte {
	switch {
	case d.err != nil:
		return nil
	case n > d.rem:
		d.err, d.b = errShort, nil
		return nil
	case n > len(d.b):
		d.err, d.b = errMore, nil
		return nil
	}
	v := d.b[:n]
	d.b, d.rem, d.at = d.b[n:], d.rem-n, d.at+n
	return v
}

func (d *bincode) u8() uint8 {
	if v := d.take(1); v != nil {
		return v[0]
	}
	return 0
}

func (d *bincode) u32() uint32 {
	if v := d.take(4); v != nil {
		return binary.LittleEndian.Uint32(v)
	}
	return 0
}

func (d *bincode) u64() uint64 {
	if v := d.take(8); v != nil {
		return binary.LittleEndian.Uint64(v)
	}
	return 0
}

// bool reads a bool; what and more name it in an error (two strings,
// joined only then).
func (d *bincode) bool(what, more string) bool {
	switch v := d.u8(); v {
	case 0:
		return false
	case 1:
		return true
	default:
		d.fail("%s%s: %d is not a bool", what, more, v)
		return false
	}
}

// option reads an Option's tag.
func (d *bincode) option(what string) bool { return d.bool(what, " (Option tag)") }

// length reads a sequence's length, each element at least min bytes: a
// length that the rest of the payload cannot hold is an error before
// anything is allocated for it.
func (d *bincode) length(what string, min int) int {
	n := d.u64()
	if d.err == nil && n > uint64(d.rem/min) {
		d.fail("%s: length %d exceeds the payload", what, n)
		return 0
	}
	return int(n)
}

func (d *bincode) str(what string) string {
	n := d.length(what, 1)
	if d.err == nil && n > len(d.b) && n <= d.rem && !validPrefix(d.b) {
		d.fail("%s: not UTF-8", what) // a false length's string would run over binary fields
	}
	at := d.at
	v := d.take(n)
	if d.err == nil && !utf8.Valid(v) {
		d.fail("%s: not UTF-8", what)
	}
	if d.err != nil {
		return ""
	}
	if d.s != "" {
		return d.s[at : at+n]
	}
	return string(v)
}

// validPrefix reports whether p can begin a UTF-8 string: valid, but for
// a rune cut short at its end.
func validPrefix(p []byte) bool {
	for i := len(p) - 1; i >= max(0, len(p)-3); i-- {
		if utf8.RuneStart(p[i]) {
			if !utf8.FullRune(p[i:]) {
				p = p[:i]
			}
			break
		}
	}
	return utf8.Valid(p)
}

// u128 reads a little-endian u128 as big-endian bytes.
func (d *bincode) u128() (id [16]byte) {
	if v := d.take(16); v != nil {
		for i := range 16 {
			id[i] = v[15-i]
		}
	}
	return id
}

func (d *bincode) time() Time { return Time{Secs: d.u64(), Nanos: d.u32()} }

// variant reads an enum's variant, one of n; what and more name it in
// an error.
func (d *bincode) variant(what, more string, n int) uint8 {
	v := d.u32()
	if d.err == nil && v >= uint32(n) {
		d.fail("%s%s: unknown variant %d", what, more, v)
		return 0
	}
	return uint8(v)
}

func (d *bincode) traceState() []KeyString {
	if !d.option("trace_state") {
		return nil
	}
	n := d.length("trace_state", 16)
	ts := make([]KeyString, 0, n)
	for range n {
		ts = append(ts, KeyString{d.str("trace_state key"), d.str("trace_state value")})
	}
	return ts
}

func (d *bincode) span(s *Span) {
	s.TraceID, s.SpanID = d.u128(), d.u64()
	s.TraceFlags, s.IsRemote = d.u8(), d.bool("is_remote", "")
	s.TraceState = d.traceState()
	s.ParentSpanID = d.u64()
	s.Kind = Kind(d.variant("span_kind", "", len(kindNames)))
	s.Name = d.str("name")
	s.Start, s.End = d.time(), d.time()

	// attributes: an EvictedHashMap; its evict_list only orders eviction.
	s.Attributes = d.keyValuesInto(s.Attributes, "attributes")
	sortKeyValues(s.Attributes)
	for range d.length("attributes evict_list", 8) {
		d.str("evict_list key")
	}
	_ = d.u32() // max_len
	s.DroppedAttributes = d.u32()

	if d.option("message_events") {
		n := d.length("message_events", 32)
		s.Events = reserve(s.Events, n)
		for range n {
			s.Events = grow(s.Events)
			e := &s.Events[len(s.Events)-1]
			*e = Event{Name: d.str("event name"), Time: d.time(), Attributes: e.Attributes}
			e.Attributes = d.keyValuesInto(e.Attributes, "event attributes")
			e.DroppedAttributes = d.u32()
		}
	} else {
		s.Events = nil
	}
	_ = d.u32() // max_len
	s.DroppedEvents = d.u32()

	if d.option("links") {
		n := d.length("links", 39)
		s.Links = reserve(s.Links, n)
		for range n {
			s.Links = grow(s.Links)
			l := &s.Links[len(s.Links)-1]
			*l = Link{TraceID: d.u128(), SpanID: d.u64(), TraceFlags: d.u8(), IsRemote: d.bool("link is_remote", ""), Attributes: l.Attributes}
			l.TraceState = d.traceState()
			l.Attributes = d.keyValuesInto(l.Attributes, "link attributes")
			l.DroppedAttributes = d.u32()
		}
	} else {
		s.Links = nil
	}
	_ = d.u32() // max_len
	s.DroppedLinks = d.u32()

	s.Status = StatusCode(d.variant("status_code", "", len(statusNames)))
	s.StatusMessage = d.str("status_message")
	if d.option("resource") {
		s.HasResource = true
		s.Resource = d.keyValuesInto(s.Resource, "resource attrs")
		sortKeyValues(s.Resource)
	}
}

// keyValuesInto reads a list of attributes into dst's array, if large
// enough.
func (d *bincode) keyValuesInto(dst []KeyValue, what string) []KeyValue {
	n := d.length(what, 12)
	kvs := reserve(dst, n)
	for range n {
		kvs = append(kvs, d.keyValue())
	}
	return kvs
}

func (d *bincode) keyValue() KeyValue {
	k := d.str("attribute key")
	return KeyValue{Key: k, Value: d.value(k)}
}

// value reads a Value: Bool, I64, F64, String, or Array (itself Bool,
// I64, F64 or String of a Vec).
func (d *bincode) value(key string) Value {
	var v Value
	t := d.variant("value of ", key, 5)
	if t == 4 {
		t = uint8(TypeBoolArray) + d.variant("array of ", key, 4)
	}
	v.Type = ValueType(t)
	switch v.Type {
	case TypeBool:
		v.Bool = d.bool(key, "")
	case TypeInt:
		v.Int = int64(d.u64())
	case TypeFloat:
		v.Float = math.Float64frombits(d.u64())
	case TypeString:
		v.Str = d.str(key)
	case TypeBoolArray:
		v.Bools = make([]bool, d.length(key, 1))
		for i := range v.Bools {
			v.Bools[i] = d.bool(key, "")
		}
	case TypeIntArray:
		v.Ints = make([]int64, d.length(key, 8))
		for i := range v.Ints {
			v.Ints[i] = int64(d.u64())
		}
	case TypeFloatArray:
		v.Floats = make([]float64, d.length(key, 8))
		for i := range v.Floats {
			v.Floats[i] = math.Float64frombits(d.u64())
		}
	case TypeStringArray:
		v.Strings = make([]string, d.length(key, 8))
		for i := range v.Strings {
			v.Strings[i] = d.str(key)
		}
	}
	return v
}
