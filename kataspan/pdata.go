package kataspan

import (
	"fmt"
	"strings"
	"unsafe"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"
)

// Decode reads one frame's payload, JSON (Kata 3.29 and later) or bincode
// (2.2 to 3.28). serde_json writes SpanData's fields in order, so a JSON
// span always begins {"span_context":; a bincode span begins with its
// trace id, whose lowest byte is anything ('{' in one trace of 256). The
// form the beginning names is tried first, then the other: a payload
// fails only when it is neither, with the error of JSON's when it begins
// as an object, of bincode's when not.
func Decode(p []byte) (*Span, error) {
	s := &Span{}
	if err := decodeInto(s, p, false); err != nil {
		return nil, err
	}
	return s, nil
}

// decodeInto is Decode into s, reusing the arrays s holds (a transient
// span's: see Span.reset). When borrow is set, the span's strings are p's
// own bytes, not a copy: it is valid only while p is unchanged. The OTLP
// path borrows, encoding the span before its Send returns.
func decodeInto(s *Span, p []byte, borrow bool) error {
	first, second := decodeBincode, decodeJSON
	if looksJSON(p) {
		first, second = decodeJSON, decodeBincode
	}
	err := first(s, p, borrow)
	if err == nil {
		return nil
	}
	if err2 := second(s, p, borrow); err2 == nil {
		return nil
	} else if (len(p) > 0 && p[0] == '{') != looksJSON(p) {
		err = err2
	}
	return err
}

// payloadString is p as a string: a copy, or p's own bytes when borrowed.
func payloadString(p []byte, borrow bool) string {
	if borrow {
		return unsafe.String(unsafe.SliceData(p), len(p))
	}
	return string(p)
}

// jsonStart is how serde_json's SpanData begins.
const jsonStart = `{"span_context":`

// looksJSON reports whether p begins as a JSON span does (all of p, when
// it is shorter).
func looksJSON(p []byte) bool {
	n := min(len(p), len(jsonStart))
	return n > 0 && string(p[:n]) == jsonStart[:n]
}

// Traces is the span in the OpenTelemetry model, as OTLP carries it. A
// resource without a service name (the agent sets none: the SDK says
// unknown_service) is named service, as Kata's own forwarder named it with
// --trace-name.
func (s *Span) Traces(service string) (ptrace.Traces, error) {
	td := ptrace.NewTraces()
	if err := s.AppendTo(td, service); err != nil {
		return ptrace.Traces{}, err
	}
	return td, nil
}

// AppendTo adds the span to td, under a resource of its own.
func (s *Span) AppendTo(td ptrace.Traces, service string) error {
	start, err := s.Start.UnixNano()
	if err != nil {
		return fmt.Errorf("start_time: %w", err)
	}
	end, err := s.End.UnixNano()
	if err != nil {
		return fmt.Errorf("end_time: %w", err)
	}
	rs := td.ResourceSpans().AppendEmpty()
	res := rs.Resource().Attributes()
	putAll(res, s.Resource)
	if name, ok := res.Get("service.name"); !ok || namesNoService(name.Str()) {
		res.PutStr("service.name", service)
	}
	sp := rs.ScopeSpans().AppendEmpty().Spans().AppendEmpty()
	sp.SetTraceID(s.TraceID)
	sp.SetSpanID(spanID(s.SpanID))
	if s.ParentSpanID != 0 {
		sp.SetParentSpanID(spanID(s.ParentSpanID))
	}
	sp.TraceState().FromRaw(traceStateString(s.TraceState))
	sp.SetFlags(uint32(s.TraceFlags))
	sp.SetName(s.Name)
	sp.SetKind(spanKinds[s.Kind])
	sp.SetStartTimestamp(pcommon.Timestamp(start))
	sp.SetEndTimestamp(pcommon.Timestamp(end))
	putAll(sp.Attributes(), s.Attributes)
	sp.SetDroppedAttributesCount(s.DroppedAttributes)
	for i, e := range s.Events {
		t, err := e.Time.UnixNano()
		if err != nil {
			return fmt.Errorf("event %d: %w", i, err)
		}
		ev := sp.Events().AppendEmpty()
		ev.SetName(e.Name)
		ev.SetTimestamp(pcommon.Timestamp(t))
		putAll(ev.Attributes(), e.Attributes)
		ev.SetDroppedAttributesCount(e.DroppedAttributes)
	}
	sp.SetDroppedEventsCount(s.DroppedEvents)
	for _, l := range s.Links {
		ln := sp.Links().AppendEmpty()
		ln.SetTraceID(l.TraceID)
		ln.SetSpanID(spanID(l.SpanID))
		ln.TraceState().FromRaw(traceStateString(l.TraceState))
		flags := uint32(l.TraceFlags) | otlpHasIsRemote
		if l.IsRemote {
			flags |= otlpIsRemote
		}
		ln.SetFlags(flags)
		putAll(ln.Attributes(), l.Attributes)
		ln.SetDroppedAttributesCount(l.DroppedAttributes)
	}
	sp.SetDroppedLinksCount(s.DroppedLinks)
	sp.Status().SetCode(statusCodes[s.Status])
	sp.Status().SetMessage(s.StatusMessage)
	return nil
}

// namesNoService reports whether a resource's service.name names none:
// empty, or the SDK's default (the agent sets none).
func namesNoService(name string) bool {
	return name == "" || strings.HasPrefix(name, "unknown_service")
}

// OTLP's span flags for a link's context being remote (SpanFlags).
const otlpHasIsRemote, otlpIsRemote = 0x100, 0x200

var spanKinds = [...]ptrace.SpanKind{
	KindClient: ptrace.SpanKindClient, KindServer: ptrace.SpanKindServer, KindProducer: ptrace.SpanKindProducer,
	KindConsumer: ptrace.SpanKindConsumer, KindInternal: ptrace.SpanKindInternal,
}

var statusCodes = [...]ptrace.StatusCode{StatusUnset: ptrace.StatusCodeUnset, StatusOk: ptrace.StatusCodeOk, StatusError: ptrace.StatusCodeError}

func spanID(id uint64) (b pcommon.SpanID) {
	for i := range 8 {
		b[7-i] = byte(id >> (8 * i))
	}
	return b
}

func putAll(m pcommon.Map, kvs []KeyValue) {
	m.EnsureCapacity(m.Len() + len(kvs))
	for _, kv := range kvs {
		v := kv.Value
		switch v.Type {
		case TypeBool:
			m.PutBool(kv.Key, v.Bool)
		case TypeInt:
			m.PutInt(kv.Key, v.Int)
		case TypeFloat:
			m.PutDouble(kv.Key, v.Float)
		case TypeString:
			m.PutStr(kv.Key, v.Str)
		default:
			sl := m.PutEmptySlice(kv.Key)
			switch v.Type {
			case TypeBoolArray:
				for _, b := range v.Bools {
					sl.AppendEmpty().SetBool(b)
				}
			case TypeIntArray:
				for _, n := range v.Ints {
					sl.AppendEmpty().SetInt(n)
				}
			case TypeFloatArray:
				for _, f := range v.Floats {
					sl.AppendEmpty().SetDouble(f)
				}
			case TypeStringArray:
				for _, s := range v.Strings {
					sl.AppendEmpty().SetStr(s)
				}
			}
		}
	}
}
