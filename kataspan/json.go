package kataspan

import (
	"errors"
	"fmt"
	"math"
	"math/bits"
	"slices"
	"strconv"
	"strings"
	"sync"
	"unicode/utf16"
	"unicode/utf8"
)

// DecodeJSON reads the payload that Kata agents 3.29 and later send:
// serde_json of opentelemetry 0.17's SpanData. Ids are bare integers (a
// u128 trace id has up to 39 digits, a span id may pass 2^63), so numbers
// are read as text, never as float64. Values are externally tagged
// ({"I64":1}, {"Array":{"String":["a"]}}); empty event and link queues
// are null.
//
// It walks the bytes once, as the bincode decoder does: no reflection, no
// token values. The payload is copied into one string, and every string of
// the span without escapes is a slice of it, so that a span costs a
// handful of allocations however many attributes it has.
func DecodeJSON(p []byte) (*Span, error) {
	s := &Span{}
	if err := decodeJSON(s, p, false); err != nil {
		return nil, err
	}
	return s, nil
}

// decodeJSON reads p into s, reusing the arrays s holds (Span.reset).
func decodeJSON(s *Span, p []byte, borrow bool) error {
	d := jsonDecoders.Get().(*jsonDecoder)
	defer jsonDecoders.Put(d)
	d.b, d.s, d.i, d.borrow = p, "", 0, borrow
	err := d.span(s)
	at := d.i
	d.b, d.s = nil, "" // the pool keeps no payload
	if err != nil {
		return fmt.Errorf("JSON span: %w (at byte %d of %d)", err, at, len(p))
	}
	return nil
}

// jsonDecoder reads one JSON text. b is the payload, s the same bytes as
// a string (made at the first string read), i the read position.
type jsonDecoder struct {
	b      []byte
	s      string
	i      int
	borrow bool // s is b's own bytes (decodeInto)
	// kvs is where a map's values are read, to be copied out in a slice
	// of their number, in the key order that order holds: reused, by way
	// of jsonDecoders.
	kvs   []KeyValue
	order []int32
}

var jsonDecoders = sync.Pool{New: func() any { return new(jsonDecoder) }}

// maxDepth bounds the nesting of a value the span does not know (skipped):
// serde_json's own recursion limit.
const maxDepth = 128

// ws skips white space.
func (d *jsonDecoder) ws() {
	for d.i < len(d.b) {
		switch d.b[d.i] {
		case ' ', '\t', '\n', '\r':
			d.i++
		default:
			return
		}
	}
}

// peek is the next byte after white space, 0 at the end.
func (d *jsonDecoder) peek() byte {
	if d.i < len(d.b) && d.b[d.i] > ' ' {
		return d.b[d.i] // serde_json writes no white space
	}
	d.ws()
	if d.i < len(d.b) {
		return d.b[d.i]
	}
	return 0
}

// unexpected is the error of finding something other than want.
func (d *jsonDecoder) unexpected(want string) error {
	if d.ws(); d.i >= len(d.b) {
		return fmt.Errorf("the payload ends where %s should be", want)
	}
	c := d.b[d.i]
	if c < 0x20 || c >= 0x7f {
		return fmt.Errorf("byte %#02x where %s should be", c, want)
	}
	return fmt.Errorf("%q where %s should be", c, want)
}

// null consumes a null, if that is what comes.
func (d *jsonDecoder) null() bool {
	if d.peek() == 'n' && d.has("null") {
		d.i += 4
		return true
	}
	return false
}

// has reports whether the bytes at the read position begin with lit.
func (d *jsonDecoder) has(lit string) bool {
	return len(d.b)-d.i >= len(lit) && string(d.b[d.i:d.i+len(lit)]) == lit
}

// wrap puts what (the field being read) before err, if any: paths are
// made only for an error, never for a field read well.
func wrap(err error, what string) error {
	if err == nil {
		return nil // small enough to be inlined: a field read well costs no call
	}
	return wrapped(err, what)
}

func wrapped(err error, what string) error { return fmt.Errorf("%s: %w", what, err) }

// str is b[from:to] as a string, a slice of the payload's one copy.
func (d *jsonDecoder) str(from, to int) string {
	if d.s == "" && len(d.b) > 0 {
		d.s = payloadString(d.b, d.borrow)
	}
	return d.s[from:to]
}

// object reads an object, calling member with each key; member reads the
// value. A key the span does not know is skipped by the caller (skip).
func (d *jsonDecoder) object(what string, member func(key string) error) error {
	if d.peek() != '{' {
		return d.unexpected(what + " (an object)")
	}
	d.i++
	if d.peek() == '}' {
		d.i++
		return nil
	}
	for {
		key, err := d.key(what)
		if err != nil {
			return err
		}
		if err := member(key); err != nil {
			return err
		}
		switch d.peek() {
		case ',':
			d.i++
		case '}':
			d.i++
			return nil
		default:
			return d.unexpected("',' or '}' in " + what)
		}
	}
}

// array reads an array, calling elem for each element; elem reads it.
func (d *jsonDecoder) array(what string, elem func() error) error {
	if d.peek() != '[' {
		return d.unexpected(what + " (an array)")
	}
	d.i++
	if d.peek() == ']' {
		d.i++
		return nil
	}
	for {
		if err := elem(); err != nil {
			return err
		}
		switch d.peek() {
		case ',':
			d.i++
		case ']':
			d.i++
			return nil
		default:
			return d.unexpected("',' or ']' in " + what)
		}
	}
}

// string reads a string. One without escapes, in valid UTF-8, is a slice
// of the payload's copy; any other is made anew, each invalid byte and
// lone surrogate as U+FFFD (as Go's encoding/json reads them: what a span
// says is kept, and OTLP's strings must be UTF-8).
func (d *jsonDecoder) string() (string, error) {
	if d.peek() != '"' {
		return "", d.unexpected("a string")
	}
	start := d.i + 1
	ascii := true
	for k, c := range d.b[start:] {
		if !strSpecial[c] {
			continue
		}
		j := start + k
		switch {
		case c == '"':
			if !ascii && !utf8.Valid(d.b[start:j]) {
				return d.unescape(start)
			}
			d.i = j + 1
			return d.str(start, j), nil
		case c == '\\':
			return d.unescape(start)
		case c < 0x20:
			d.i = j
			return "", fmt.Errorf("control character %#02x in a string", c)
		case c >= 0x80:
			ascii = false
		}
	}
	d.i = len(d.b)
	return "", errors.New("the payload ends in a string")
}

// unescape reads the string from start (after its quote) the slow way.
func (d *jsonDecoder) unescape(start int) (string, error) {
	out := make([]byte, 0, 16)
	j := start
	for j < len(d.b) {
		c := d.b[j]
		switch {
		case c == '"':
			d.i = j + 1
			return string(out), nil
		case c < 0x20:
			d.i = j
			return "", fmt.Errorf("control character %#02x in a string", c)
		case c == '\\':
			if j+1 >= len(d.b) {
				d.i = len(d.b)
				return "", errors.New("the payload ends in a string")
			}
			e := d.b[j+1]
			j += 2
			switch e {
			case '"', '\\', '/':
				out = append(out, e)
			case 'b':
				out = append(out, '\b')
			case 'f':
				out = append(out, '\f')
			case 'n':
				out = append(out, '\n')
			case 'r':
				out = append(out, '\r')
			case 't':
				out = append(out, '\t')
			case 'u':
				r, ok := hex4(d.b[j:])
				if !ok {
					d.i = j
					return "", errors.New(`\u not followed by four hex digits`)
				}
				j += 4
				if utf16.IsSurrogate(r) {
					// A pair is one rune; a lone half is U+FFFD.
					r2, ok := rune(0), false
					if j+6 <= len(d.b) && d.b[j] == '\\' && d.b[j+1] == 'u' {
						r2, ok = hex4(d.b[j+2:])
					}
					if dec := utf16.DecodeRune(r, r2); ok && dec != utf8.RuneError {
						r, j = dec, j+6
					} else {
						r = utf8.RuneError
					}
				}
				out = utf8.AppendRune(out, r)
			default:
				d.i = j - 1
				return "", fmt.Errorf("unknown escape \\%c", e)
			}
		case c < 0x80:
			out = append(out, c)
			j++
		default:
			r, size := utf8.DecodeRune(d.b[j:])
			out = utf8.AppendRune(out, r) // RuneError for an invalid byte
			j += size
		}
	}
	d.i = len(d.b)
	return "", errors.New("the payload ends in a string")
}

// strSpecial are the bytes a string's fast scan stops at: its end, an
// escape, a control character (refused), and any not ASCII (checked).
var strSpecial = func() (t [256]bool) {
	for c := range 256 {
		t[c] = c == '"' || c == '\\' || c < 0x20 || c >= 0x80
	}
	return t
}()

func hex4(b []byte) (rune, bool) {
	if len(b) < 4 {
		return 0, false
	}
	var r rune
	for _, c := range b[:4] {
		switch {
		case '0' <= c && c <= '9':
			c -= '0'
		case 'a' <= c && c <= 'f':
			c -= 'a' - 10
		case 'A' <= c && c <= 'F':
			c -= 'A' - 10
		default:
			return 0, false
		}
		r = r<<4 | rune(c)
	}
	return r, true
}

// number reads a number's text, checked against JSON's grammar.
func (d *jsonDecoder) number() (string, error) {
	d.ws()
	start, j := d.i, d.i
	digits := func() int {
		n := 0
		for j < len(d.b) && '0' <= d.b[j] && d.b[j] <= '9' {
			j++
			n++
		}
		return n
	}
	if j < len(d.b) && d.b[j] == '-' {
		j++
	}
	switch n := digits(); {
	case n == 0 && j == len(d.b) && j > start:
		d.i = j
		return "", errors.New("the payload ends in a number")
	case n == 0:
		return "", d.unexpected("a number")
	case n > 1 && d.b[j-n] == '0':
		d.i = j - n
		return "", errors.New("a number with a leading zero")
	}
	if j < len(d.b) && d.b[j] == '.' {
		j++
		if digits() == 0 {
			d.i = j
			return "", errors.New("no digits after a decimal point")
		}
	}
	if j < len(d.b) && (d.b[j] == 'e' || d.b[j] == 'E') {
		j++
		if j < len(d.b) && (d.b[j] == '+' || d.b[j] == '-') {
			j++
		}
		if digits() == 0 {
			d.i = j
			return "", errors.New("no digits in an exponent")
		}
	}
	d.i = j
	return d.str(start, j), nil
}

// uint reads an unsigned integer of at most bits bits.
func (d *jsonDecoder) uint(bits int) (uint64, error) {
	n, err := d.number()
	if err != nil {
		return 0, err
	}
	if len(n) <= 19 { // no 19 digits overflow a u64: read by hand
		v, digits := uint64(0), true
		for i := 0; i < len(n) && digits; i++ {
			c := n[i] - '0'
			digits = c <= 9
			v = v*10 + uint64(c)
		}
		if digits && (bits == 64 || v < 1<<bits) {
			return v, nil
		}
		// Not digits, or too large: strconv says which.
	}
	v, err := strconv.ParseUint(n, 10, bits)
	if err != nil {
		return 0, fmt.Errorf("%q is not an unsigned %d-bit integer", n, bits)
	}
	return v, nil
}

// count reads a u32 count; null is none.
func (d *jsonDecoder) count() (uint32, error) {
	if d.null() {
		return 0, nil
	}
	v, err := d.uint(32)
	return uint32(v), err
}

// u128 reads a u128 into big-endian bytes, without big numbers.
func (d *jsonDecoder) u128() (id [16]byte, err error) {
	n, err := d.number()
	if err != nil {
		return id, err
	}
	var hi, lo uint64
	for i := range len(n) {
		c := n[i]
		if c < '0' || c > '9' {
			return id, fmt.Errorf("%q is not an unsigned 128-bit integer", n)
		}
		// (hi, lo) = (hi, lo)*10 + c, refused past 128 bits.
		h, l := bits.Mul64(lo, 10)
		hh, hl := bits.Mul64(hi, 10)
		var carry, over uint64
		lo, carry = bits.Add64(l, uint64(c-'0'), 0)
		hi, over = bits.Add64(hl, h, carry)
		if hh != 0 || over != 0 {
			return id, fmt.Errorf("%q is not an unsigned 128-bit integer", n)
		}
	}
	for i := range 8 {
		id[i], id[8+i] = byte(hi>>(56-8*i)), byte(lo>>(56-8*i))
	}
	return id, nil
}

// bool reads true or false.
func (d *jsonDecoder) bool() (bool, error) {
	switch d.peek() {
	case 't':
		if d.has("true") {
			d.i += 4
			return true, nil
		}
	case 'f':
		if d.has("false") {
			d.i += 5
			return false, nil
		}
	}
	return false, d.unexpected("true or false")
}

// skip reads a value the span does not know (an evict_list, a max_len),
// checking it is JSON: without recursion, its nesting bounded.
func (d *jsonDecoder) skip() error {
	// closing holds, per open object or array, the byte that ends it.
	var stack [16]byte
	closing := stack[:0]
	for {
		// A value.
		switch c := d.peek(); {
		case c == '{' || c == '[':
			if len(closing) == maxDepth {
				return fmt.Errorf("values nested more than %d deep", maxDepth)
			}
			d.i++
			end := byte('}')
			if c == '[' {
				end = ']'
			}
			if d.peek() == end {
				d.i++
				break
			}
			closing = append(closing, end)
			if end == '}' {
				if _, err := d.key("a value"); err != nil {
					return err
				}
			}
			continue
		case c == '"':
			if _, err := d.string(); err != nil {
				return err
			}
		case c == 't' || c == 'f':
			if _, err := d.bool(); err != nil {
				return err
			}
		case c == 'n':
			if !d.null() {
				return d.unexpected("a value")
			}
		case c == '-' || '0' <= c && c <= '9':
			if _, err := d.number(); err != nil {
				return err
			}
		default:
			return d.unexpected("a value")
		}
		// After a value: the next member or element, or ends.
		for {
			if len(closing) == 0 {
				return nil
			}
			end := closing[len(closing)-1]
			c := d.peek()
			if c == end {
				d.i++
				closing = closing[:len(closing)-1]
				continue
			}
			if c != ',' {
				return d.unexpected(fmt.Sprintf("',' or '%c'", end))
			}
			d.i++
			if end == '}' {
				if _, err := d.key("a value"); err != nil {
					return err
				}
			}
			break
		}
	}
}

// key reads a key of what (an object) and its colon.
func (d *jsonDecoder) key(what string) (string, error) {
	if d.peek() != '"' {
		return "", d.unexpected("a key in " + what)
	}
	key, err := d.string()
	if err != nil {
		return "", err
	}
	if d.peek() != ':' {
		return "", d.unexpected("':' after " + strconv.Quote(key))
	}
	d.i++
	return key, nil
}

// variant reads a unit enum variant by its name.
func (d *jsonDecoder) variant(names []string) (uint8, error) {
	s, err := d.string()
	if err != nil {
		return 0, err
	}
	for i, n := range names {
		if n == s {
			return uint8(i), nil
		}
	}
	return 0, fmt.Errorf("%q is not one of %v", s, names)
}

// The span's fields, as bits of what was read (serde's derive refuses a
// field given twice). Those without which there is no span are required
// (below); serde's derive requires the rest too, but a span without its
// name or attributes still says what it says: they may be absent, as the
// decoder before this one let them be.
const (
	fContext = 1 << iota
	fParent
	fKind
	fName
	fStart
	fEnd
	fAttributes
	fEvents
	fMessageEvents
	fLinks
	fStatus
	fStatusMessage
	fResource
)

// spanField is a span's field's bit, 0 for a key the span does not know.
func spanField(key string) int {
	switch key {
	case "span_context":
		return fContext
	case "parent_span_id":
		return fParent
	case "span_kind":
		return fKind
	case "name":
		return fName
	case "start_time":
		return fStart
	case "end_time":
		return fEnd
	case "attributes":
		return fAttributes
	case "events":
		return fEvents
	case "message_events":
		return fMessageEvents
	case "links":
		return fLinks
	case "status_code":
		return fStatus
	case "status_message":
		return fStatusMessage
	case "resource":
		return fResource
	}
	return 0
}

// required are the fields a span must have (not null), in the order they
// are said missing.
var required = []struct {
	field int
	name  string
}{{fContext, "span_context"}, {fParent, "parent_span_id"}, {fKind, "span_kind"}, {fStart, "start_time"}, {fEnd, "end_time"}, {fStatus, "status_code"}}

// span reads the whole payload.
func (d *jsonDecoder) span(s *Span) error {
	s.reset()
	var seen, have int // fields read; of them, those not null
	// The events are read into s's own, kept for reuse (message_events,
	// the older name, is rare).
	events, messageEvents := jsonEvents{queue: s.Events}, jsonEvents{}
	s.Events = nil
	err := d.object("the span", func(key string) error {
		f := spanField(key)
		if f == 0 {
			return d.skip()
		}
		if seen&f != 0 {
			return fmt.Errorf("field %q twice", key)
		}
		seen |= f
		if d.null() {
			return nil
		}
		have |= f
		var err error
		switch f {
		case fContext:
			err = d.context(&s.TraceID, &s.SpanID, &s.TraceFlags, &s.IsRemote, &s.TraceState)
		case fParent:
			s.ParentSpanID, err = d.uint(64)
		case fKind:
			var k uint8
			k, err = d.variant(kindNames[:])
			s.Kind = Kind(k)
		case fName:
			s.Name, err = d.string()
		case fStart:
			s.Start, err = d.time()
		case fEnd:
			s.End, err = d.time()
		case fAttributes:
			err = d.attributeMap(s)
		case fEvents:
			err = d.events(&events)
		case fMessageEvents:
			err = d.events(&messageEvents)
		case fLinks:
			err = d.links(s)
		case fStatus:
			var st uint8
			st, err = d.variant(statusNames[:])
			s.Status = StatusCode(st)
		case fStatusMessage:
			s.StatusMessage, err = d.string()
		case fResource:
			s.HasResource, s.Resource = true, emptied(s.Resource)
			err = d.object("resource", func(k string) error {
				if k != "attrs" {
					return d.skip()
				}
				if d.null() {
					return nil
				}
				var err error
				s.Resource, err = d.valueMap(s.Resource)
				return err
			})
		}
		return wrap(err, key)
	})
	if err != nil {
		return err
	}
	if d.ws(); d.i != len(d.b) {
		return errors.New("more than one value in the payload")
	}
	for _, r := range required {
		if have&r.field == 0 {
			return fmt.Errorf("no %s", r.name)
		}
	}
	if have&fMessageEvents != 0 {
		events = messageEvents // the older name wins, as it always did
	}
	s.Events, s.DroppedEvents = events.queue, events.dropped
	return nil
}

// jsonEvents is an EvictedQueue of events, read before it is known
// whether it is the span's (message_events wins over events).
type jsonEvents struct {
	queue   []Event
	dropped uint32
}

// context reads a SpanContext.
func (d *jsonDecoder) context(trace *[16]byte, span *uint64, flags *uint8, remote *bool, ts *[]KeyString) error {
	var ids int
	err := d.object("a span context", func(key string) error {
		var err error
		switch key {
		case "trace_id":
			ids |= 1
			*trace, err = d.u128()
		case "span_id":
			ids |= 2
			*span, err = d.uint(64)
		case "trace_flags":
			if !d.null() {
				var f uint64
				f, err = d.uint(8)
				*flags = uint8(f)
			}
		case "is_remote":
			if !d.null() {
				*remote, err = d.bool()
			}
		case "trace_state":
			if !d.null() {
				*ts = emptied(*ts)
				err = d.array("trace_state", func() error {
					var kv [2]string
					n := 0
					err := d.array("a trace_state entry", func() error {
						v, err := d.string()
						if n < 2 {
							kv[n] = v
						}
						n++
						return err
					})
					if err == nil && n != 2 {
						err = fmt.Errorf("an entry of %d strings, not a key and a value", n)
					}
					*ts = append(*ts, KeyString{kv[0], kv[1]})
					return err
				})
			}
		default:
			return d.skip()
		}
		return wrap(err, key)
	})
	if err == nil && ids != 3 {
		err = errors.New("no trace_id or span_id")
	}
	return err
}

// time reads a SystemTime.
func (d *jsonDecoder) time() (Time, error) {
	var t Time
	var have int
	err := d.object("a time", func(key string) error {
		switch key {
		case "secs_since_epoch":
			have |= 1
			v, err := d.uint(64)
			t.Secs = v
			return wrap(err, key)
		case "nanos_since_epoch":
			have |= 2
			v, err := d.uint(32)
			t.Nanos = uint32(v)
			return wrap(err, key)
		}
		return d.skip()
	})
	if err == nil && have != 3 {
		err = errors.New("no secs_since_epoch or nanos_since_epoch")
	}
	return t, err
}

// attributeMap reads an EvictedHashMap: its map and dropped count (the
// evict_list only orders eviction).
func (d *jsonDecoder) attributeMap(s *Span) error {
	s.Attributes = emptied(s.Attributes)
	return d.object("attributes", func(key string) error {
		var err error
		switch key {
		case "map":
			if !d.null() {
				s.Attributes, err = d.valueMap(s.Attributes)
			}
		case "dropped_count":
			s.DroppedAttributes, err = d.count()
		default:
			return d.skip()
		}
		return wrap(err, key)
	})
}

// valueMap reads a map of values, ordered by key; a key given twice keeps
// its last value, as Rust's HashMap does.
func (d *jsonDecoder) valueMap(dst []KeyValue) ([]KeyValue, error) {
	kvs := d.kvs[:0]
	err := d.object("a map", func(key string) error {
		kvs = append(kvs, KeyValue{Key: key})
		if err := d.value(&kvs[len(kvs)-1].Value); err != nil {
			return fmt.Errorf("%q: %w", key, err)
		}
		return nil
	})
	if err != nil {
		d.keep(kvs)
		return nil, err
	}
	defer d.keep(kvs)
	// The values stay where they were read; their places are sorted
	// (stable: of equal keys the last read is last, and kept), and each
	// is moved once, to the map's own slice.
	order := d.order[:0]
	for i := range kvs {
		order = append(order, int32(i))
	}
	slices.SortStableFunc(order, func(a, b int32) int { return strings.Compare(kvs[a].Key, kvs[b].Key) })
	if cap(order) <= 256 {
		d.order = order // a huge map's is not kept
	}
	n := 0
	for k, i := range order {
		if k+1 == len(order) || kvs[order[k+1]].Key != kvs[i].Key {
			order[n] = i
			n++
		}
	}
	out := reserve(dst, n)
	for _, i := range order[:n] {
		out = append(out, kvs[i])
	}
	return out, nil
}

// keep keeps kvs's array for the next map. What it holds is cleared when
// large or borrowed: a small copy's strings, of one span, may wait for
// the next; a borrowed payload's may not outlive it.
func (d *jsonDecoder) keep(kvs []KeyValue) {
	switch {
	case cap(kvs) > 256 || len(d.b) > 64<<10:
		clear(kvs)
		kvs = nil
	case d.borrow:
		clear(kvs)
	}
	d.kvs = kvs[:0]
}

// keyValues reads a list of {"key":…,"value":…}; null is none.
func (d *jsonDecoder) keyValues(dst []KeyValue) ([]KeyValue, error) {
	if d.null() {
		return emptied(dst), nil
	}
	kvs := d.kvs[:0]
	err := d.array("attributes", func() error {
		var kv KeyValue
		have := 0
		err := d.object("an attribute", func(key string) error {
			var err error
			switch key {
			case "key":
				have |= 1
				kv.Key, err = d.string()
			case "value":
				have |= 2
				err = d.value(&kv.Value)
			default:
				return d.skip()
			}
			return wrap(err, key)
		})
		if err == nil && have != 3 {
			err = errors.New("no key or no value")
		}
		kvs = append(kvs, kv)
		if err != nil {
			return fmt.Errorf("attribute %d: %w", len(kvs)-1, err)
		}
		return nil
	})
	out := append(reserve(dst, len(kvs)), kvs...)
	d.keep(kvs)
	return out, err
}

// events reads an EvictedQueue of events.
func (d *jsonDecoder) events(q *jsonEvents) error {
	return d.object("events", func(key string) error {
		var err error
		switch key {
		case "queue":
			if d.null() {
				return nil
			}
			q.queue = reserve(q.queue, 4) // a span's few, in one allocation
			err = d.array("a queue", func() error {
				q.queue = grow(q.queue)
				if err := d.event(&q.queue[len(q.queue)-1]); err != nil {
					return fmt.Errorf("event %d: %w", len(q.queue)-1, err)
				}
				return nil
			})
		case "dropped_count":
			q.dropped, err = d.count()
		default:
			return d.skip()
		}
		return wrap(err, key)
	})
}

func (d *jsonDecoder) event(e *Event) error {
	var haveTime bool
	*e = Event{Attributes: emptied(e.Attributes)}
	err := d.object("an event", func(key string) error {
		var err error
		switch key {
		case "name":
			if !d.null() {
				e.Name, err = d.string()
			}
		case "timestamp":
			if !d.null() {
				haveTime = true
				e.Time, err = d.time()
			}
		case "attributes":
			e.Attributes, err = d.keyValues(e.Attributes)
		case "dropped_attributes_count":
			e.DroppedAttributes, err = d.count()
		default:
			return d.skip()
		}
		return wrap(err, key)
	})
	if err == nil && !haveTime {
		err = errors.New("no timestamp")
	}
	return err
}

// links reads an EvictedQueue of links.
func (d *jsonDecoder) links(s *Span) error {
	return d.object("links", func(key string) error {
		var err error
		switch key {
		case "queue":
			if d.null() {
				return nil
			}
			s.Links = emptied(s.Links)
			err = d.array("a queue", func() error {
				s.Links = grow(s.Links)
				l := &s.Links[len(s.Links)-1]
				*l = Link{Attributes: emptied(l.Attributes)}
				if err := d.link(l); err != nil {
					return fmt.Errorf("link %d: %w", len(s.Links)-1, err)
				}
				return nil
			})
		case "dropped_count":
			s.DroppedLinks, err = d.count()
		default:
			return d.skip()
		}
		return wrap(err, key)
	})
}

func (d *jsonDecoder) link(l *Link) error {
	var haveContext bool
	err := d.object("a link", func(key string) error {
		var err error
		switch key {
		case "span_context":
			if !d.null() {
				haveContext = true
				err = d.context(&l.TraceID, &l.SpanID, &l.TraceFlags, &l.IsRemote, &l.TraceState)
			}
		case "attributes":
			l.Attributes, err = d.keyValues(l.Attributes)
		case "dropped_attributes_count":
			l.DroppedAttributes, err = d.count()
		default:
			return d.skip()
		}
		return wrap(err, key)
	})
	if err == nil && !haveContext {
		err = errors.New("no span_context")
	}
	return err
}

// value reads an externally tagged Value ({"I64":1},
// {"Array":{"String":["a"]}}): exactly one variant, not null. F64 may be
// null: serde_json writes NaN and the infinities so, and the value's
// being a float is kept (as NaN).
func (d *jsonDecoder) value(v *Value) error {
	n := 0
	err := d.object("a value", func(key string) error {
		var err error
		switch key {
		case "Bool", "I64", "String", "Array":
			if d.null() {
				return nil
			}
		case "F64":
		default:
			return d.skip()
		}
		n++
		switch key {
		case "Bool":
			v.Type = TypeBool
			v.Bool, err = d.bool()
		case "I64":
			v.Type = TypeInt
			v.Int, err = d.int()
		case "F64":
			v.Type = TypeFloat
			v.Float, err = d.float()
		case "String":
			v.Type = TypeString
			v.Str, err = d.string()
		case "Array":
			err = d.arrayValue(v)
		}
		return wrap(err, key)
	})
	if err == nil && n != 1 {
		err = errors.New("a value must have exactly one of Bool, I64, F64, String, Array (not null)")
	}
	return err
}

// arrayValue reads an Array value's one variant.
func (d *jsonDecoder) arrayValue(v *Value) error {
	m := 0
	err := d.object("an array value", func(key string) error {
		switch key {
		case "Bool", "I64", "F64", "String":
			if d.null() {
				return nil
			}
		default:
			return d.skip()
		}
		m++
		var err error
		switch key {
		case "Bool":
			v.Type = TypeBoolArray
			v.Bools, err = readArray(d, d.bool)
		case "I64":
			v.Type = TypeIntArray
			v.Ints, err = readArray(d, d.int)
		case "F64":
			v.Type = TypeFloatArray
			v.Floats, err = readArray(d, d.float)
		case "String":
			v.Type = TypeStringArray
			v.Strings, err = readArray(d, d.string)
		}
		return wrap(err, key)
	})
	if err == nil && m != 1 {
		err = errors.New("an array must have exactly one of Bool, I64, F64, String (not null)")
	}
	return err
}

// readArray reads an array's elements, each by read, into a buffer on
// the stack, then copies them out at their number: one allocation an
// array, never nil.
func readArray[T any](d *jsonDecoder, read func() (T, error)) ([]T, error) {
	var buf [16]T
	xs := buf[:0]
	err := d.array("an array", func() error {
		x, err := read()
		xs = append(xs, x)
		return err
	})
	return append(make([]T, 0, len(xs)), xs...), err
}

// int reads an i64.
func (d *jsonDecoder) int() (int64, error) {
	n, err := d.number()
	if err != nil {
		return 0, err
	}
	v, err := strconv.ParseInt(n, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%q is not a 64-bit integer", n)
	}
	return v, nil
}

// float reads an f64, null as NaN.
func (d *jsonDecoder) float() (float64, error) {
	if d.null() {
		return math.NaN(), nil
	}
	n, err := d.number()
	if err != nil {
		return 0, err
	}
	f, err := strconv.ParseFloat(n, 64)
	if err != nil {
		return 0, fmt.Errorf("%q is out of range for a 64-bit float", n)
	}
	return f, nil
}
