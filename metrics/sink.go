package metrics

import "github.com/katatrace/katatrace/sink"

// SinkState is what a host's sink dropped itself, by reason, and, for a
// collector or OTLP sink, what it holds and retries.
type SinkState struct {
	Name      string
	Dropped   map[string]uint64
	Collector *sink.CollectorStats
}

// SinkStateOf reads s (through wrappers such as the Kata span decoder).
// Sinks that hand on as they are called have nothing to say.
func SinkStateOf(s sink.Sink) SinkState {
	switch s := sink.Inner(s).(type) {
	case *sink.CollectorSink:
		st := s.Stats()
		return SinkState{Name: s.URL(), Collector: &st,
			Dropped: map[string]uint64{"sink_dropped": st.Dropped, "sink_rejected": st.Rejected}}
	case *sink.PacketSink:
		return SinkState{Dropped: map[string]uint64{"sink_port_closed": s.Unseen()}}
	}
	return SinkState{}
}

// LogAttrs are the state as log attributes (SIGUSR1's stats, the last line).
func (s SinkState) LogAttrs() []any {
	var attrs []any
	for _, reason := range []string{"sink_dropped", "sink_rejected", "sink_port_closed"} {
		if n, ok := s.Dropped[reason]; ok {
			attrs = append(attrs, reason, n)
		}
	}
	if c := s.Collector; c != nil {
		attrs = append(attrs, "sink_queued", c.Queued, "sink_queued_bytes", c.QueuedBytes, "sink_in_flight", c.InFlight,
			"sink_accepted", c.Posted, "sink_rejected_spans", c.RejectedSpans, "sink_retries", c.Retries, "sink_up", c.Up)
	}
	return attrs
}
