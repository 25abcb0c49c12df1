package metrics

import (
	"slices"
	"strings"

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

// newTrafficDescs names them katatrace_<prefix>_…; whose, if not empty,
// says whose they are in the help ("A guest's").
func newTrafficDescs(prefix, whose string, labels ...string) trafficDescs {
	d := func(name, help string, more ...string) *prometheus.Desc {
		if whose == "" {
			help = strings.ToUpper(help[:1]) + help[1:]
		} else {
			help = whose + " " + help
		}
		return desc(prefix+"_"+name, help, append(slices.Clone(labels), more...)...)
	}
	return trafficDescs{
		accepted:   d("connections_accepted_total", "connections accepted."),
		datagrams:  d("datagrams_total", "datagrams handed to the sink."),
		bytes:      d("bytes_total", "payload bytes handed to the sink."),
		flushes:    d("flushes_total", "flush requests answered."),
		duplicates: d("duplicates_total", "datagrams resent after a reconnect that had been handed on already: not handed on twice."),
		dropped: d("dropped_datagrams_total", "datagrams not handed on, by reason: sink_refused (the sink refused them), guest_queue_full (the guest's relay dropped them, as its sequence numbers tell), and for the host the sink's own: sink_port_closed (sent over UDP while nothing listened, as the port's refusals of later sends reveal), sink_dropped (a collector or OTLP endpoint: queue full, or unreachable at shutdown), sink_rejected (refused by it for good).",
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

// The host relay's metrics: totals, then per guest.
var (
	hostTraffic  = newTrafficDescs("host", "")
	hostActive   = desc("host_connections", "Guest connections open now.")
	hostRefused  = desc("host_connections_refused_total", "Connections refused: over --max-connections or --max-connections-per-guest.")
	hostTimedOut = desc("host_connections_timed_out_total", "Connections closed for --hello-timeout or --frame-timeout.")
	hostProtocol = desc("host_protocol_errors_total", "Connections closed because the guest broke the wire protocol.")
	hostListen   = desc("host_listeners", "Sockets listening for guests, per --from: a pattern or a socket whose directory does not exist yet counts those it has now (0: no guest can connect).", "from")

	sinkQueued      = desc("sink_queue_batches", "Batches waiting in the sink's queue for its endpoint (a collector or OTLP endpoint).", "sink")
	sinkQueuedBytes = desc("sink_queue_bytes", "Bytes of the batches waiting in the sink's queue.", "sink")
	sinkInFlight    = desc("sink_in_flight_requests", "Requests being posted to the sink's endpoint, or waiting to be retried.", "sink")
	sinkPosted      = desc("sink_accepted_batches_total", "Batches the sink's endpoint accepted.", "sink")
	sinkRetries     = desc("sink_retries_total", "Requests to the sink's endpoint that failed and were retried (or, at the end of their time, dropped).", "sink")
	sinkLastSuccess = desc("sink_last_success_timestamp_seconds", "When the sink's endpoint last accepted a request, in seconds since the epoch (0: never).", "sink")
	sinkUp          = desc("sink_up", "0 while the sink's endpoint is unreachable (from a failed request to the next accepted one), else 1.", "sink")

	// A guest is named by how it connects (vsock:CID, or the
	// hybrid-vsock socket) and by its Kata sandbox ID where the host can
	// know it ("" where not).
	guestTraffic = newTrafficDescs("guest", "A guest's", "guest", "sandbox")
	guestConns   = desc("guest_connections", "A guest's connections open now.", "guest", "sandbox")
)

// Host is what a host relay's metrics read besides its Server.
type Host struct {
	// Sink is the server's sink: what it holds, retries and drops.
	Sink sink.Sink
	// Listeners counts the sockets listening per --from.
	Listeners func() map[string]int
}

type hostCollector struct {
	srv *hostrelay.Server
	Host
}

// ForServer exports a host relay's counters, per guest too: a guest is a
// VM (a vsock CID, or the VMM behind a hybrid-vsock socket), kept for a
// while after its last connection so that a scrape sees its final counts.
func ForServer(srv *hostrelay.Server, h Host) prometheus.Collector {
	return &hostCollector{srv: srv, Host: h}
}

func (c *hostCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range slices.Concat(hostTraffic.all(), guestTraffic.all(),
		[]*prometheus.Desc{hostActive, hostRefused, hostTimedOut, hostProtocol, hostListen, guestConns,
			sinkQueued, sinkQueuedBytes, sinkInFlight, sinkPosted, sinkRetries, sinkLastSuccess, sinkUp}) {
		ch <- d
	}
}

func (c *hostCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.srv.Stats()
	hostTraffic.collect(ch, s.Traffic)
	ch <- gauge(hostActive, float64(s.Active))
	ch <- counter(hostRefused, s.Refused)
	ch <- counter(hostTimedOut, s.TimedOut)
	ch <- counter(hostProtocol, s.ProtocolErrors)
	if c.Listeners != nil {
		for from, n := range c.Listeners() {
			ch <- gauge(hostListen, float64(n), from)
		}
	}
	if c.Sink != nil {
		st := SinkStateOf(c.Sink)
		for reason, n := range st.Dropped {
			ch <- counter(hostTraffic.dropped, n, reason)
		}
		if cs := st.Collector; cs != nil {
			ch <- gauge(sinkQueued, float64(cs.Queued), st.Name)
			ch <- gauge(sinkQueuedBytes, float64(cs.QueuedBytes), st.Name)
			ch <- gauge(sinkInFlight, float64(cs.InFlight), st.Name)
			ch <- counter(sinkPosted, cs.Posted, st.Name)
			ch <- counter(sinkRetries, cs.Retries, st.Name)
			last := 0.0
			if !cs.LastSuccess.IsZero() {
				last = float64(cs.LastSuccess.UnixNano()) / 1e9
			}
			ch <- gauge(sinkLastSuccess, last, st.Name)
			up := 0.0
			if cs.Up {
				up = 1
			}
			ch <- gauge(sinkUp, up, st.Name)
		}
	}
	for _, g := range c.srv.Guests() {
		guestTraffic.collect(ch, g.Traffic, g.Guest, g.Sandbox)
		ch <- gauge(guestConns, float64(g.Connections), g.Guest, g.Sandbox)
	}
}

// A guest relay's metrics, per stream (kind: jaeger or text).
var (
	relayReceived   = desc("relay_received_datagrams_total", "Datagrams read from the local socket.", "kind")
	relaySent       = desc("relay_sent_datagrams_total", "Datagrams written to the host stream (again after a reconnect, if unconfirmed).", "kind")
	relaySentBytes  = desc("relay_sent_bytes_total", "Payload bytes written to the host stream.", "kind")
	relayConfirmed  = desc("relay_confirmed_datagrams_total", "Datagrams the host confirmed (protocol v2).", "kind")
	relayDropped    = desc("relay_dropped_datagrams_total", "Datagrams lost, by reason: queue_full (the oldest, dropped for room), refused (empty or too large), host_dropped (confirmed by the host but not handed on: its sink refused them), socket_full (dropped by the kernel at the socket read from, its buffer full while reading waited for a slow host).", "kind", "reason")
	relayQueued     = desc("relay_queue_datagrams", "Datagrams waiting to be sent.", "kind")
	relayQueueBytes = desc("relay_queue_bytes", "Bytes held in the queue, sent or not, 4 bytes of framing each included.", "kind")
	relayUnacked    = desc("relay_unconfirmed_datagrams", "Datagrams sent and not yet confirmed (protocol v2).", "kind")
	relayConnects   = desc("relay_connects_total", "Connections made to the host.", "kind")
	relayDialFails  = desc("relay_dial_failures_total", "Attempts to reach the host that failed.", "kind")
	relayFlushes    = desc("relay_flushes_answered_total", "Flush requests the host answered.", "kind")
	relayConnected  = desc("relay_connected", "1 while a connection to the host is up.", "kind")
	relayUnaccepted = desc("relay_host_unaccepted_datagrams", "Datagrams the host's sink endpoint (a collector) had not accepted, held there or lost, as the host's last flush answer said (protocol v2).", "kind")
)

// Relay is a guest relay to export (a *guestrelay.Relay), named by the kind of
// its stream.
type Relay interface {
	Kind() wire.Kind
	Stats() guestrelay.Stats
}

type relayCollector []Relay

// ForRelays exports guest relays' counters.
func ForRelays(rs ...Relay) prometheus.Collector { return relayCollector(rs) }

func (c relayCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{relayReceived, relaySent, relaySentBytes, relayConfirmed, relayDropped, relayQueued,
		relayQueueBytes, relayUnacked, relayConnects, relayDialFails, relayFlushes, relayConnected, relayUnaccepted} {
		ch <- d
	}
}

func (c relayCollector) Collect(ch chan<- prometheus.Metric) {
	for _, r := range c {
		s, k := r.Stats(), r.Kind().String()
		q := s.Queue
		ch <- counter(relayReceived, q.Enqueued+q.Rejected, k)
		ch <- counter(relaySent, s.Sent, k)
		ch <- counter(relaySentBytes, s.SentBytes, k)
		ch <- counter(relayConfirmed, q.Acked, k)
		ch <- counter(relayDropped, q.Dropped, k, "queue_full")
		ch <- counter(relayDropped, q.Rejected, k, "refused")
		ch <- counter(relayDropped, s.HostDropped, k, "host_dropped")
		ch <- counter(relayDropped, s.SocketDropped, k, "socket_full")
		ch <- gauge(relayQueued, float64(q.Queued), k)
		ch <- gauge(relayQueueBytes, float64(q.QueuedBytes), k)
		ch <- gauge(relayUnacked, float64(q.Unacked), k)
		ch <- counter(relayConnects, s.Connects, k)
		ch <- counter(relayDialFails, s.DialFailures, k)
		ch <- counter(relayFlushes, s.FlushesAnswered, k)
		connected := 0.0
		if s.Connected {
			connected = 1
		}
		ch <- gauge(relayConnected, connected, k)
		ch <- gauge(relayUnaccepted, float64(s.HostUnaccepted), k)
	}
}
