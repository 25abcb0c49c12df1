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
		Attrs map[string]json.RawMessage `json:"attrs"`
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
	Map          map[string]json.RawMessage `json:"map"`
	DroppedCount json.Number                `json:"dropped_count"`
}

type jsonKeyValue struct {
	Key   string          `json:"key"`
	Value json.RawMessage `json:"value"`
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
	if w.SpanKind == nil {
		return nil, errors.New("no span_kind")
	}
	k, ok := indexOf(kindNames[:], *w.SpanKind)
	if !ok {
		return nil, fmt.Errorf("span_kind %q is not one of %v", *w.SpanKind, kindNames)
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
	if w.StatusCode == nil {
		return nil, errors.New("no status_code")
	}
	st, ok := indexOf(statusNames[:], *w.StatusCode)
	if !ok {
		return nil, fmt.Errorf("status_code %q is not one of %v", *w.StatusCode, statusNames)
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

func indexOf(names []string, s string) (int, bool) {
	for i, n := range names {
		if n == s {
			return i, true
		}
	}
	return 0, false
}

// mapValues reads an attribute map; its order is the payload's (serde
// writes a HashMap in no particular order).
func mapValues(m map[string]json.RawMessage, what string) ([]KeyValue, error) {
	kvs := make([]KeyValue, 0, len(m))
	for k, raw := range m {
		v, err := valueOf(raw)
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
		v, err := valueOf(kv.Value)
		if err != nil {
			return nil, fmt.Errorf("%s attribute %q: %w", what, kv.Key, err)
		}
		kvs = append(kvs, KeyValue{Key: kv.Key, Value: v})
	}
	return kvs, nil
}

// valueOf reads one externally tagged Value.
func valueOf(raw json.RawMessage) (Value, error) {
	var tagged map[string]json.RawMessage
	if err := json.Unmarshal(raw, &tagged); err != nil || len(tagged) != 1 {
		return Value{}, fmt.Errorf("a value must be an object with one variant, not %.40s", raw)
	}
	for tag, body := range tagged {
		if tag == "Array" {
			var arr map[string]json.RawMessage
			if err := json.Unmarshal(body, &arr); err != nil || len(arr) != 1 {
				return Value{}, fmt.Errorf("an array must be an object with one variant, not %.40s", body)
			}
			for t, items := range arr {
				return arrayOf(t, items)
			}
		}
		return scalarOf(tag, body)
	}
	panic("unreachable")
}

func scalarOf(tag string, body json.RawMessage) (v Value, err error) {
	switch tag {
	case "Bool":
		v.Type, err = TypeBool, json.Unmarshal(body, &v.Bool)
	case "I64":
		v.Type, err = TypeInt, json.Unmarshal(body, &v.Int)
	case "F64":
		v.Type = TypeFloat
		v.Float, err = floatOf(body)
	case "String":
		v.Type, err = TypeString, json.Unmarshal(body, &v.Str)
	default:
		return v, fmt.Errorf("unknown value variant %q", tag)
	}
	if err != nil {
		return v, fmt.Errorf("%s value: %w", tag, err)
	}
	return v, nil
}

func arrayOf(tag string, items json.RawMessage) (v Value, err error) {
	switch tag {
	case "Bool":
		v.Type, err = TypeBoolArray, json.Unmarshal(items, &v.Bools)
	case "I64":
		v.Type, err = TypeIntArray, json.Unmarshal(items, &v.Ints)
	case "F64":
		v.Type = TypeFloatArray
		var raws []json.RawMessage
		if err = json.Unmarshal(items, &raws); err == nil {
			v.Floats = make([]float64, len(raws))
			for i, r := range raws {
				if v.Floats[i], err = floatOf(r); err != nil {
					break
				}
			}
		}
	case "String":
		v.Type, err = TypeStringArray, json.Unmarshal(items, &v.Strings)
	default:
		return v, fmt.Errorf("unknown array variant %q", tag)
	}
	if err != nil {
		return v, fmt.Errorf("array of %s: %w", tag, err)
	}
	if v.Bools == nil && v.Ints == nil && v.Floats == nil && v.Strings == nil {
		return v, fmt.Errorf("array of %s: null", tag)
	}
	return v, nil
}

// floatOf reads an f64: serde_json writes NaN and the infinities as null,
// which is read back as NaN (the value is gone; its being a float is not).
func floatOf(raw json.RawMessage) (float64, error) {
	if string(bytes.TrimSpace(raw)) == "null" {
		return math.NaN(), nil
	}
	var f float64
	return f, json.Unmarshal(raw, &f)
}
