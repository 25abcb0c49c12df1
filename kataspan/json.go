package kataspan

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/big"
	"strconv"
)

// DecodeJSON reads the payload that Kata agents 3.29 and later send:
// serde_json of opentelemetry 0.17's SpanData. Ids are bare integers (a
// u128 trace id has up to 39 digits, a span id may pass 2^63), so numbers
// are read as text, never as float64. Values are externally tagged
// ({"I64":1}, {"Array":{"String":["a"]}}); empty event and link queues
// are null.
func DecodeJSON(p []byte) (*Span, error) {
	var w jsonSpan
	dec := json.NewDecoder(bytes.NewReader(p))
	dec.UseNumber()
	if err := dec.Decode(&w); err != nil {
		return nil, fmt.Errorf("JSON span: %w", err)
	}
	if dec.More() {
		return nil, errors.New("JSON span: more than one value in the payload")
	}
	s, err := w.span()
	if err != nil {
		return nil, fmt.Errorf("JSON span %q: %w", w.Name, err)
	}
	return s, nil
}

// The serde forms of opentelemetry 0.17's types. A field the payload lacks
// is an error where Rust's derive would fail too (ids, times, the kind).
type jsonSpan struct {
	SpanContext   *jsonContext  `json:"span_context"`
	ParentSpanID  *json.Number  `json:"parent_span_id"`
	SpanKind      *string       `json:"span_kind"`
	Name          string        `json:"name"`
	StartTime     *jsonTime     `json:"start_time"`
	EndTime       *jsonTime     `json:"end_time"`
	Attributes    *jsonAttrMap  `json:"attributes"`
	Events        jsonQueue     `json:"events"`
	MessageEvents *jsonQueue    `json:"message_events"` // the older name
	Links         jsonLinkQueue `json:"links"`
	StatusCode    *string       `json:"status_code"`
	StatusMessage string        `json:"status_message"`
	Resource      *struct {
		Attrs map[string]jsonValue `json:"attrs"`
	} `json:"resource"`
}

type jsonContext struct {
	TraceID    *json.Number `json:"trace_id"`
	SpanID     *json.Number `json:"span_id"`
	TraceFlags json.Number  `json:"trace_flags"`
	IsRemote   bool         `json:"is_remote"`
	TraceState [][]string   `json:"trace_state"`
}

type jsonTime struct {
	Secs  *json.Number `json:"secs_since_epoch"`
	Nanos *json.Number `json:"nanos_since_epoch"`
}

type jsonAttrMap struct {
	Map          map[string]jsonValue `json:"map"`
	DroppedCount json.Number          `json:"dropped_count"`
}

type jsonKeyValue struct {
	Key   string    `json:"key"`
	Value jsonValue `json:"value"`
}

type jsonQueue struct {
	Queue []struct {
		Name                   string         `json:"name"`
		Timestamp              *jsonTime      `json:"timestamp"`
		Attributes             []jsonKeyValue `json:"attributes"`
		DroppedAttributesCount json.Number    `json:"dropped_attributes_count"`
	} `json:"queue"`
	DroppedCount json.Number `json:"dropped_count"`
}

type jsonLinkQueue struct {
	Queue []struct {
		SpanContext            *jsonContext   `json:"span_context"`
		Attributes             []jsonKeyValue `json:"attributes"`
		DroppedAttributesCount json.Number    `json:"dropped_attributes_count"`
	} `json:"queue"`
	DroppedCount json.Number `json:"dropped_count"`
}

func (w *jsonSpan) span() (*Span, error) {
	s := &Span{Name: w.Name, StatusMessage: w.StatusMessage}
	var err error
	if w.SpanContext == nil {
		return nil, errors.New("no span_context")
	}
	if s.TraceID, s.SpanID, s.TraceFlags, s.TraceState, err = w.SpanContext.read("span_context"); err != nil {
		return nil, err
	}
	s.IsRemote = w.SpanContext.IsRemote
	if w.ParentSpanID == nil {
		return nil, errors.New("no parent_span_id")
	}
	if s.ParentSpanID, err = uintOf(*w.ParentSpanID, 64, "parent_span_id"); err != nil {
		return nil, err
	}
	k, err := variantOf(w.SpanKind, kindNames[:], "span_kind")
	if err != nil {
		return nil, err
	}
	s.Kind = Kind(k)
	if s.Start, err = w.StartTime.read("start_time"); err != nil {
		return nil, err
	}
	if s.End, err = w.EndTime.read("end_time"); err != nil {
		return nil, err
	}
	if w.Attributes != nil {
		if s.Attributes, err = mapValues(w.Attributes.Map, "attributes"); err != nil {
			return nil, err
		}
		if s.DroppedAttributes, err = count(w.Attributes.DroppedCount, "attributes dropped_count"); err != nil {
			return nil, err
		}
	}
	events := &w.Events
	if w.MessageEvents != nil {
		events = w.MessageEvents
	}
	for i, e := range events.Queue {
		ev := Event{Name: e.Name}
		what := fmt.Sprintf("event %d", i)
		if ev.Time, err = e.Timestamp.read(what + " timestamp"); err != nil {
			return nil, err
		}
		if ev.Attributes, err = listValues(e.Attributes, what); err != nil {
			return nil, err
		}
		if ev.DroppedAttributes, err = count(e.DroppedAttributesCount, what+" dropped_attributes_count"); err != nil {
			return nil, err
		}
		s.Events = append(s.Events, ev)
	}
	if s.DroppedEvents, err = count(events.DroppedCount, "events dropped_count"); err != nil {
		return nil, err
	}
	for i, l := range w.Links.Queue {
		what := fmt.Sprintf("link %d", i)
		if l.SpanContext == nil {
			return nil, fmt.Errorf("%s: no span_context", what)
		}
		var ln Link
		if ln.TraceID, ln.SpanID, ln.TraceFlags, ln.TraceState, err = l.SpanContext.read(what); err != nil {
			return nil, err
		}
		ln.IsRemote = l.SpanContext.IsRemote
		if ln.Attributes, err = listValues(l.Attributes, what); err != nil {
			return nil, err
		}
		if ln.DroppedAttributes, err = count(l.DroppedAttributesCount, what+" dropped_attributes_count"); err != nil {
			return nil, err
		}
		s.Links = append(s.Links, ln)
	}
	if s.DroppedLinks, err = count(w.Links.DroppedCount, "links dropped_count"); err != nil {
		return nil, err
	}
	st, err := variantOf(w.StatusCode, statusNames[:], "status_code")
	if err != nil {
		return nil, err
	}
	s.Status = StatusCode(st)
	if w.Resource != nil {
		s.HasResource = true
		if s.Resource, err = mapValues(w.Resource.Attrs, "resource"); err != nil {
			return nil, err
		}
	}
	return s, nil
}

func (c *jsonContext) read(what string) (trace [16]byte, span uint64, flags uint8, ts []KeyString, err error) {
	if c.TraceID == nil || c.SpanID == nil {
		return trace, 0, 0, nil, fmt.Errorf("%s: no trace_id or span_id", what)
	}
	if trace, err = u128Of(*c.TraceID, what+" trace_id"); err != nil {
		return
	}
	if span, err = uintOf(*c.SpanID, 64, what+" span_id"); err != nil {
		return
	}
	f, err := uintOf(orZero(c.TraceFlags), 8, what+" trace_flags")
	if err != nil {
		return
	}
	for _, kv := range c.TraceState {
		if len(kv) != 2 {
			return trace, 0, 0, nil, fmt.Errorf("%s trace_state: an entry of %d strings, not a key and a value", what, len(kv))
		}
		ts = append(ts, KeyString{kv[0], kv[1]})
	}
	if c.TraceState != nil && ts == nil {
		ts = []KeyString{}
	}
	return trace, span, uint8(f), ts, nil
}

func (t *jsonTime) read(what string) (Time, error) {
	if t == nil || t.Secs == nil || t.Nanos == nil {
		return Time{}, fmt.Errorf("no %s", what)
	}
	secs, err := uintOf(*t.Secs, 64, what+" secs_since_epoch")
	if err != nil {
		return Time{}, err
	}
	nanos, err := uintOf(*t.Nanos, 32, what+" nanos_since_epoch")
	if err != nil {
		return Time{}, err
	}
	return Time{Secs: secs, Nanos: uint32(nanos)}, nil
}

func orZero(n json.Number) json.Number {
	if n == "" {
		return "0"
	}
	return n
}

func count(n json.Number, what string) (uint32, error) {
	v, err := uintOf(orZero(n), 32, what)
	return uint32(v), err
}

// uintOf reads an unsigned integer of at most bits bits.
func uintOf(n json.Number, bits int, what string) (uint64, error) {
	v, err := strconv.ParseUint(string(n), 10, bits)
	if err != nil {
		return 0, fmt.Errorf("%s: %q is not an unsigned %d-bit integer", what, string(n), bits)
	}
	return v, nil
}

// u128Of reads a u128 into big-endian bytes.
func u128Of(n json.Number, what string) (id [16]byte, err error) {
	v, ok := new(big.Int).SetString(string(n), 10)
	if !ok || v.Sign() < 0 || v.BitLen() > 128 {
		return id, fmt.Errorf("%s: %q is not an unsigned 128-bit integer", what, string(n))
	}
	v.FillBytes(id[:])
	return id, nil
}

// variantOf reads a unit enum variant by its name.
func variantOf(name *string, names []string, what string) (uint8, error) {
	if name == nil {
		return 0, fmt.Errorf("no %s", what)
	}
	for i, n := range names {
		if n == *name {
			return uint8(i), nil
		}
	}
	return 0, fmt.Errorf("%s %q is not one of %v", what, *name, names)
}

// mapValues reads an attribute map; its order is the payload's (serde
// writes a HashMap in no particular order).
func mapValues(m map[string]jsonValue, what string) ([]KeyValue, error) {
	kvs := make([]KeyValue, 0, len(m))
	for k, jv := range m {
		v, err := jv.value()
		if err != nil {
			return nil, fmt.Errorf("%s %q: %w", what, k, err)
		}
		kvs = append(kvs, KeyValue{Key: k, Value: v})
	}
	sortKeyValues(kvs)
	return kvs, nil
}

func listValues(l []jsonKeyValue, what string) ([]KeyValue, error) {
	kvs := make([]KeyValue, 0, len(l))
	for _, kv := range l {
		v, err := kv.Value.value()
		if err != nil {
			return nil, fmt.Errorf("%s attribute %q: %w", what, kv.Key, err)
		}
		kvs = append(kvs, KeyValue{Key: kv.Key, Value: v})
	}
	return kvs, nil
}

// jsonValue is an externally tagged Value ({"I64":1},
// {"Array":{"String":["a"]}}), read in one pass: exactly one variant is
// present. F64 is kept raw: serde_json writes NaN and the infinities as
// null, which must not read as an absent variant.
type jsonValue struct {
	Bool   *bool
	I64    *int64
	F64    json.RawMessage
	String *string
	Array  *struct {
		Bool   *[]bool
		I64    *[]int64
		F64    *[]jsonFloat
		String *[]string
	}
}

func (j *jsonValue) value() (Value, error) {
	var v Value
	n := 0
	if j.Bool != nil {
		v.Type, v.Bool = TypeBool, *j.Bool
		n++
	}
	if j.I64 != nil {
		v.Type, v.Int = TypeInt, *j.I64
		n++
	}
	if j.F64 != nil {
		f, err := floatOf(j.F64)
		if err != nil {
			return v, fmt.Errorf("F64 value: %w", err)
		}
		v.Type, v.Float = TypeFloat, f
		n++
	}
	if j.String != nil {
		v.Type, v.Str = TypeString, *j.String
		n++
	}
	if a := j.Array; a != nil {
		m := 0
		if a.Bool != nil {
			v.Type, v.Bools = TypeBoolArray, *a.Bool
			m++
		}
		if a.I64 != nil {
			v.Type, v.Ints = TypeIntArray, *a.I64
			m++
		}
		if a.F64 != nil {
			v.Type, v.Floats = TypeFloatArray, make([]float64, len(*a.F64))
			for i, f := range *a.F64 {
				v.Floats[i] = float64(f)
			}
			m++
		}
		if a.String != nil {
			v.Type, v.Strings = TypeStringArray, *a.String
			m++
		}
		if m != 1 {
			return v, errors.New("an array must have exactly one of Bool, I64, F64, String (not null)")
		}
		n++
	}
	if n != 1 {
		return v, errors.New("a value must have exactly one of Bool, I64, F64, String, Array (not null)")
	}
	if v.Type == TypeBoolArray && v.Bools == nil || v.Type == TypeIntArray && v.Ints == nil || v.Type == TypeStringArray && v.Strings == nil {
		return v, errors.New("a null array")
	}
	return v, nil
}

// jsonFloat is an f64 as serde_json writes it: null for NaN and the
// infinities, read back as NaN (the value is gone; its being a float is
// not).
type jsonFloat float64

func (f *jsonFloat) UnmarshalJSON(b []byte) error {
	v, err := floatOf(b)
	*f = jsonFloat(v)
	return err
}

// floatOf reads an f64, null as NaN.
func floatOf(raw json.RawMessage) (float64, error) {
	if string(bytes.TrimSpace(raw)) == "null" {
		return math.NaN(), nil
	}
	var f float64
	return f, json.Unmarshal(raw, &f)
}
