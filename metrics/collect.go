package metrics

import (
	"slices"
	"strings"
	"sync"

	"github.com/katatrace/katatrace/guestrelay"
	"github.com/katatrace/katatrace/hostrelay"
	"github.com/katatrace/katatrace/sink"
	"github.com/katatrace/katatrace/wire"
	"github.com/prometheus/client_golang/prometheus"
)

// desc is one metric's description; labels are its variable labels.
func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc("katatrace_"+name, help, labels, nil)
}

// counter and gauge make one sample of d.
func counter(d *prometheus.Desc, v uint64, labels ...string) prometheus.Metric {
	return prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
}

func gauge(d *prometheus.Desc, v float64, labels ...string) prometheus.Metric {
	return prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
}

// trafficDescs are the metrics of a hostrelay.Traffic: the host relay's totals,
// or one guest's (with its label).
type trafficDescs struct {
	accepted, datagrams, bytes, flushes, duplicates, dropped, paused, notAccepted, unparsed *prometheus.Desc
}

// describer makes descriptions named katatrace_<prefix>_…, with labels
// (and more of their own); whose, if not empty, says whose they are in
// the help ("A guest's").
func describer(prefix, whose string, labels ...string) func(name, help string, more ...string) *prometheus.Desc {
	return func(name, help string, more ...string) *prometheus.Desc {
		if whose == "" {
			help = strings.ToUpper(help[:1]) + help[1:]
		} else {
			help = whose + " " + help
		}
		return desc(prefix+"_"+name, help, append(slices.Clone(labels), more...)...)
	}
}

// newTrafficDescs names them katatrace_<prefix>_… (see describer).
func newTrafficDescs(prefix, whose string, labels ...string) trafficDescs {
	d := describer(prefix, whose, labels...)
	return trafficDescs{
		accepted:   d("connections_accepted_total", "connections accepted."),
		datagrams:  d("datagrams_total", "datagrams handed to the sink."),
		bytes:      d("bytes_total", "payload bytes handed to the sink."),
		flushes:    d("flushes_total", "flush requests answered."),
		duplicates: d("duplicates_total", "datagrams resent after a reconnect that had been handed on already: not handed on twice."),
		dropped: d("dropped_datagrams_total", "datagrams not handed on, by reason: sink_refused (the sink refused them), guest_queue_full (the guest's relay dropped them, as its sequence numbers tell), and for the host the sink's own: sink_port_closed (sent over UDP while nothing listened, as the port's refusals of later sends reveal), sink_dropped (a collector or OTLP endpoint: queue full, or not delivered by the end of a stop), sink_rejected (refused by it for good); per guest, sink_lost (what a collector or OTLP endpoint did not take of the guest's: dropped or refused).",
			"reason"),
		paused:      d("budget_paused_seconds_total", "time reading waited for budgets (--guest-rate)."),
		notAccepted: d("flushes_not_accepted_total", "flush requests answered while the sink's endpoint (a collector) had not accepted everything of the guest's: the guest was told how much (protocol v2)."),
		unparsed:    d("unparsed_bytes_total", "bytes of raw (socat) streams that did not parse (--raw-split=thrift): skipped, not handed on."),
	}
}

func (d trafficDescs) all() []*prometheus.Desc {
	return []*prometheus.Desc{d.accepted, d.datagrams, d.bytes, d.flushes, d.duplicates, d.dropped, d.paused, d.notAccepted, d.unparsed}
}

func (d trafficDescs) collect(ch chan<- prometheus.Metric, t hostrelay.Traffic, labels ...string) {
	ch <- counter(d.accepted, t.Accepted, labels...)
	ch <- counter(d.datagrams, t.Datagrams, labels...)
	ch <- counter(d.bytes, t.Bytes, labels...)
	ch <- counter(d.flushes, t.Flushes, labels...)
	ch <- counter(d.duplicates, t.Duplicates, labels...)
	ch <- counter(d.dropped, t.SinkErrors, slices.Concat(labels, []string{"sink_refused"})...)
	ch <- counter(d.dropped, t.GuestDropped, slices.Concat(labels, []string{"guest_queue_full"})...)
	ch <- prometheus.MustNewConstMetric(d.paused, prometheus.CounterValue, t.Paused.Seconds(), labels...)
	ch <- counter(d.notAccepted, t.FlushesNotAccepted, labels...)
	ch <- counter(d.unparsed, t.Unparsed, labels...)
}

// spanDescs are the metrics of a Kata agents' forwarder's traffic, in its
// words (frames, spans, agents): its totals, or one agent's.
type spanDescs struct {
	accepted, frames, spans, bytes, skippedFrames, skippedBytes, resyncs, dropped, paused *prometheus.Desc
}

func newSpanDescs(prefix, whose string, labels ...string) spanDescs {
	d := describer(prefix, whose, labels...)
	return spanDescs{
		accepted: d("connections_accepted_total", "connections accepted (a Kata agent makes one, and keeps it)."),
		frames:   d("frames_total", "frames read whole: each a span, or skipped as undecodable."),
		spans:    d("spans_total", "spans decoded and handed to the sink."),
		bytes:    d("bytes_total", "payload bytes of the frames read whole."),
		skippedFrames: d("skipped_frames_total", "frames not handed on, by reason: undecodable (framed, but no span), oversize (above --max-span-bytes: read through), stalled (not finished within --frame-timeout: dropped, the rest skipped). The connection is kept.",
			"reason"),
		skippedBytes: d("skipped_bytes_total", "bytes of the stream skipped: skipped frames, and what a resync passed over."),
		resyncs:      d("resyncs_total", "times a stream's framing was lost (a length no span could have, or a stream taken up after a crash) and the next frame looked for."),
		dropped: d("dropped_spans_total", "spans decoded but not delivered, by reason: sink_refused (the sink refused them), and the sink's own: sink_port_closed, sink_dropped, sink_rejected; per agent, sink_lost (see katatrace_host_dropped_datagrams_total).",
			"reason"),
		paused: d("budget_paused_seconds_total", "time reading waited for budgets (--guest-rate)."),
	}
}

func (d spanDescs) all() []*prometheus.Desc {
	return []*prometheus.Desc{d.accepted, d.frames, d.spans, d.bytes, d.skippedFrames, d.skippedBytes, d.resyncs, d.dropped, d.paused}
}

func (d spanDescs) collect(ch chan<- prometheus.Metric, t hostrelay.Traffic, labels ...string) {
	with := func(more string) []string { return slices.Concat(labels, []string{more}) }
	ch <- counter(d.accepted, t.Accepted, labels...)
	ch <- counter(d.frames, t.Datagrams, labels...)
	ch <- counter(d.spans, t.Datagrams-t.Undecodable, labels...)
	ch <- counter(d.bytes, t.Bytes, labels...)
	ch <- counter(d.skippedFrames, t.Undecodable, with("undecodable")...)
	ch <- counter(d.skippedFrames, t.Skipped.Oversize, with("oversize")...)
	ch <- counter(d.skippedFrames, t.Skipped.Stalled, with("stalled")...)
	ch <- counter(d.skippedBytes, t.Skipped.Bytes, labels...)
	ch <- counter(d.resyncs, t.Skipped.Resyncs, labels...)
	ch <- counter(d.dropped, t.SinkErrors, with("sink_refused")...)
	ch <- prometheus.MustNewConstMetric(d.paused, prometheus.CounterValue, t.Paused.Seconds(), labels...)
}

// serverDescs are what a host relay's server counts beyond its traffic,
// named katatrace_<prefix>_….
type serverDescs struct {
	active, refused, timedOut, protocol, listen, stored, notStored, adopted *prometheus.Desc
	held, heldLimit, waiting, waits                                         *prometheus.Desc
}

func newServerDescs(prefix, peers string) serverDescs {
	return serverDescs{
		active:    desc(prefix+"_connections", strings.ToUpper(peers[:1])+peers[1:]+" connections open now."),
		refused:   desc(prefix+"_connections_refused_total", "Connections refused: over --max-connections or --max-connections-per-guest."),
		timedOut:  desc(prefix+"_connections_timed_out_total", "Connections closed for --hello-timeout or --frame-timeout."),
		protocol:  desc(prefix+"_protocol_errors_total", "Connections closed because the guest broke the wire protocol."),
		listen:    desc(prefix+"_listeners", "Sockets listening for "+peers+"s, per --from: a pattern or a socket whose directory does not exist yet counts those it has now (0: none can connect).", "from"),
		stored:    desc(prefix+"_connections_stored", "Connections in systemd's file descriptor store now: a restart or crash of this process keeps them."),
		notStored: desc(prefix+"_connections_not_stored_total", "Connections the file descriptor store could not take (full: FileDescriptorStoreMax=): a restart ends them."),
		adopted:   desc(prefix+"_connections_adopted_total", "Connections taken up from the unit's previous process (after its restart or crash)."),
		held:      desc(prefix+"_held_bytes", "Memory held now for frames still arriving, beyond each connection's own buffer (bounded by --max-held-bytes)."),
		heldLimit: desc(prefix+"_held_bytes_limit", "The bound on that memory: of all "+peers+"s (--max-held-bytes), and of each (--max-held-bytes-per-guest).", "of"),
		waiting:   desc(prefix+"_frames_waiting_for_room", "Frames waiting, unread, for room (their "+peers+"'s share, or the total, was held)."),
		waits:     desc(prefix+"_frames_waited_for_room_total", "Frames that waited for room before they were read."),
	}
}

// hostDescs are the host relays' metrics (totals, then per guest) and the
// forwarder's (totals, then per agent). They are made by the first host
// role's collector, never by a guest role.
var hostDescs = sync.OnceValue(func() *hostDescSet {
	return &hostDescSet{
		traffic:      newTrafficDescs("host", ""),
		host:         newServerDescs("host", "guest"),
		spans:        newSpanDescs("forwarder", ""),
		forwarder:    newServerDescs("forwarder", "agent"),
		agentTraffic: newSpanDescs("agent", "An agent's", "guest", "sandbox"),
		agentConns:   desc("agent_connections", "An agent's connections open now.", "guest", "sandbox"),

		sinkQueued:        desc("sink_queue_batches", "Batches waiting in the sink's queue for its endpoint (a collector or OTLP endpoint).", "sink"),
		sinkQueuedBytes:   desc("sink_queue_bytes", "Bytes of the batches waiting in the sink's queue.", "sink"),
		sinkInFlight:      desc("sink_in_flight_requests", "Requests being posted to the sink's endpoint, or waiting to be retried.", "sink"),
		sinkPosted:        desc("sink_accepted_batches_total", "Batches the sink's endpoint accepted.", "sink"),
		sinkRejectedSpans: desc("sink_rejected_spans_total", "Spans the sink's OTLP endpoint rejected from requests it took (its partial success): spans, whatever the relay counts in.", "sink"),
		sinkRetries:       desc("sink_retries_total", "Requests to the sink's endpoint that failed and were retried (or, at the end of their time, dropped).", "sink"),
		sinkLastSuccess:   desc("sink_last_success_timestamp_seconds", "When the sink's endpoint last accepted a request, in seconds since the epoch (0: never).", "sink"),
		sinkUp:            desc("sink_up", "0 while the sink's endpoint is unreachable (from a failed request to the next accepted one), else 1.", "sink"),

		// A guest is named by how it connects (vsock:CID, or the
		// hybrid-vsock socket) and by its Kata sandbox ID where the host
		// can know it ("" where not).
		guestTraffic: newTrafficDescs("guest", "A guest's", "guest", "sandbox"),
		guestConns:   desc("guest_connections", "A guest's connections open now.", "guest", "sandbox"),
	}
})

type hostDescSet struct {
	traffic, guestTraffic                                   trafficDescs
	spans, agentTraffic                                     spanDescs
	host, forwarder                                         serverDescs
	guestConns, agentConns                                  *prometheus.Desc
	sinkQueued, sinkQueuedBytes, sinkInFlight, sinkPosted   *prometheus.Desc
	sinkRetries, sinkLastSuccess, sinkUp, sinkRejectedSpans *prometheus.Desc
}

// Host is what a host relay's metrics read besides its Server.
type Host struct {
	// Sink is the server's sink: what it holds, retries and drops.
	Sink sink.Sink
	// Listeners counts the sockets listening per --from.
	Listeners func() map[string]int
	// Spans says the server is a Kata agents' forwarder: its metrics
	// count frames and spans, per agent (katatrace_forwarder_…,
	// katatrace_agent_…), not datagrams per guest.
	Spans bool
}

type hostCollector struct {
	srv *hostrelay.Server
	d   *hostDescSet
	Host
}

// ForServer exports a host relay's counters, per guest too: a guest is a
// VM (a vsock CID, or the VMM behind a hybrid-vsock socket), kept for a
// while after its last connection so that a scrape sees its final counts.
func ForServer(srv *hostrelay.Server, h Host) prometheus.Collector {
	return &hostCollector{srv: srv, d: hostDescs(), Host: h}
}

func (c *hostCollector) Describe(ch chan<- *prometheus.Desc) {
	d := c.d
	var own []*prometheus.Desc
	if c.Spans {
		f := d.forwarder
		own = slices.Concat(d.spans.all(), d.agentTraffic.all(),
			[]*prometheus.Desc{f.active, f.refused, f.listen, f.stored, f.notStored, f.adopted, f.held, f.heldLimit, f.waiting, f.waits, d.agentConns})
	} else {
		h := d.host
		own = slices.Concat(d.traffic.all(), d.guestTraffic.all(),
			[]*prometheus.Desc{h.active, h.refused, h.timedOut, h.protocol, h.listen, h.stored, h.notStored, h.adopted, h.held, h.heldLimit, h.waiting, h.waits, d.guestConns})
	}
	for _, x := range slices.Concat(own, []*prometheus.Desc{d.sinkQueued, d.sinkQueuedBytes, d.sinkInFlight, d.sinkPosted, d.sinkRetries, d.sinkLastSuccess, d.sinkUp, d.sinkRejectedSpans}) {
		ch <- x
	}
}

func (c *hostCollector) Collect(ch chan<- prometheus.Metric) {
	s, d := c.srv.Stats(), c.d
	sd, dropped := d.host, d.traffic.dropped
	if c.Spans {
		sd, dropped = d.forwarder, d.spans.dropped
		d.spans.collect(ch, s.Traffic)
	} else {
		d.traffic.collect(ch, s.Traffic)
		ch <- counter(sd.timedOut, s.TimedOut)
		ch <- counter(sd.protocol, s.ProtocolErrors)
	}
	ch <- gauge(sd.active, float64(s.Active))
	ch <- counter(sd.refused, s.Refused)
	ch <- gauge(sd.stored, float64(s.Stored))
	ch <- counter(sd.notStored, s.NotStored)
	ch <- counter(sd.adopted, s.Adopted)
	ch <- gauge(sd.held, float64(s.Held.Held))
	ch <- gauge(sd.heldLimit, float64(s.Held.Total), "all")
	ch <- gauge(sd.heldLimit, float64(s.Held.Each), "each")
	ch <- gauge(sd.waiting, float64(s.Held.Waiting))
	ch <- counter(sd.waits, s.Held.Waits)
	if c.Listeners != nil {
		for from, n := range c.Listeners() {
			ch <- gauge(sd.listen, float64(n), from)
		}
	}
	if c.Sink != nil {
		st := SinkStateOf(c.Sink)
		for reason, n := range st.Dropped {
			ch <- counter(dropped, n, reason)
		}
		if cs := st.Collector; cs != nil {
			ch <- gauge(d.sinkQueued, float64(cs.Queued), st.Name)
			ch <- gauge(d.sinkQueuedBytes, float64(cs.QueuedBytes), st.Name)
			ch <- gauge(d.sinkInFlight, float64(cs.InFlight), st.Name)
			ch <- counter(d.sinkPosted, cs.Posted, st.Name)
			ch <- counter(d.sinkRetries, cs.Retries, st.Name)
			ch <- counter(d.sinkRejectedSpans, cs.RejectedSpans, st.Name)
			last := 0.0
			if !cs.LastSuccess.IsZero() {
				last = float64(cs.LastSuccess.UnixNano()) / 1e9
			}
			ch <- gauge(d.sinkLastSuccess, last, st.Name)
			up := 0.0
			if cs.Up {
				up = 1
			}
			ch <- gauge(d.sinkUp, up, st.Name)
		}
	}
	// What the sink's endpoint did not take, per guest: a stop without a
	// successor says it here and in its log.
	holder, _ := sink.Inner(c.Sink).(sink.Holder)
	for _, g := range c.srv.Guests() {
		dropped, conns := d.guestTraffic.dropped, d.guestConns
		if c.Spans {
			d.agentTraffic.collect(ch, g.Traffic, g.Guest, g.Sandbox)
			dropped, conns = d.agentTraffic.dropped, d.agentConns
		} else {
			d.guestTraffic.collect(ch, g.Traffic, g.Guest, g.Sandbox)
		}
		ch <- gauge(conns, float64(g.Connections), g.Guest, g.Sandbox)
		if holder != nil {
			ch <- counter(dropped, holder.Lost(g.Guest), g.Guest, g.Sandbox, "sink_lost")
		}
	}
}

// relayDescs are a guest relay's metrics, per stream (kind: jaeger or
// text), made by the first guest relay's collector.
var relayDescs = sync.OnceValue(func() *relayDescSet {
	return &relayDescSet{
		received:   desc("relay_received_datagrams_total", "Datagrams read from the local socket.", "kind"),
		sent:       desc("relay_sent_datagrams_total", "Datagrams written to the host stream (again after a reconnect, if unconfirmed).", "kind"),
		sentBytes:  desc("relay_sent_bytes_total", "Payload bytes written to the host stream.", "kind"),
		confirmed:  desc("relay_confirmed_datagrams_total", "Datagrams the host confirmed (protocol v2).", "kind"),
		dropped:    desc("relay_dropped_datagrams_total", "Datagrams lost, by reason: queue_full (the oldest, dropped for room), refused (empty or too large), host_dropped (confirmed by the host but not handed on: its sink refused them), socket_full (dropped by the kernel at the socket read from, its buffer full while reading waited for a slow host).", "kind", "reason"),
		queued:     desc("relay_queue_datagrams", "Datagrams waiting to be sent.", "kind"),
		queueBytes: desc("relay_queue_bytes", "Bytes held in the queue, sent or not, 4 bytes of framing each included.", "kind"),
		unacked:    desc("relay_unconfirmed_datagrams", "Datagrams sent and not yet confirmed (protocol v2).", "kind"),
		connects:   desc("relay_connects_total", "Connections made to the host.", "kind"),
		dialFails:  desc("relay_dial_failures_total", "Attempts to reach the host that failed.", "kind"),
		flushes:    desc("relay_flushes_answered_total", "Flush requests the host answered.", "kind"),
		connected:  desc("relay_connected", "1 while a connection to the host is up.", "kind"),
		unaccepted: desc("relay_host_unaccepted_datagrams", "Datagrams the host's sink endpoint (a collector) had not accepted, held there or lost, as the host's last flush answer said (protocol v2).", "kind"),
	}
})

type relayDescSet struct {
	received, sent, sentBytes, confirmed, dropped, queued, queueBytes *prometheus.Desc
	unacked, connects, dialFails, flushes, connected, unaccepted      *prometheus.Desc
}

// Relay is a guest relay to export (a *guestrelay.Relay), named by the kind of
// its stream.
type Relay interface {
	Kind() wire.Kind
	Stats() guestrelay.Stats
}

type relayCollector struct {
	rs []Relay
	d  *relayDescSet
}

// ForRelays exports guest relays' counters.
func ForRelays(rs ...Relay) prometheus.Collector { return relayCollector{rs: rs, d: relayDescs()} }

func (c relayCollector) Describe(ch chan<- *prometheus.Desc) {
	d := c.d
	for _, x := range []*prometheus.Desc{d.received, d.sent, d.sentBytes, d.confirmed, d.dropped, d.queued,
		d.queueBytes, d.unacked, d.connects, d.dialFails, d.flushes, d.connected, d.unaccepted} {
		ch <- x
	}
}

func (c relayCollector) Collect(ch chan<- prometheus.Metric) {
	d := c.d
	for _, r := range c.rs {
		s, k := r.Stats(), r.Kind().String()
		q := s.Queue
		ch <- counter(d.received, q.Enqueued+q.Rejected, k)
		ch <- counter(d.sent, s.Sent, k)
		ch <- counter(d.sentBytes, s.SentBytes, k)
		ch <- counter(d.confirmed, q.Acked, k)
		ch <- counter(d.dropped, q.Dropped, k, "queue_full")
		ch <- counter(d.dropped, q.Rejected, k, "refused")
		ch <- counter(d.dropped, s.HostDropped, k, "host_dropped")
		ch <- counter(d.dropped, s.SocketDropped, k, "socket_full")
		ch <- gauge(d.queued, float64(q.Queued), k)
		ch <- gauge(d.queueBytes, float64(q.QueuedBytes), k)
		ch <- gauge(d.unacked, float64(q.Unacked), k)
		ch <- counter(d.connects, s.Connects, k)
		ch <- counter(d.dialFails, s.DialFailures, k)
		ch <- counter(d.flushes, s.FlushesAnswered, k)
		connected := 0.0
		if s.Connected {
			connected = 1
		}
		ch <- gauge(d.connected, connected, k)
		ch <- gauge(d.unaccepted, float64(s.HostUnaccepted), k)
	}
}
