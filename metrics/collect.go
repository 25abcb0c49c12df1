package metrics

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/katatrace/katatrace/netx"
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

// The host relay's metrics: totals, then per guest.
var (
	hostAccepted   = desc("host_connections_accepted_total", "Guest connections accepted.")
	hostActive     = desc("host_connections", "Guest connections open now.")
	hostRefused    = desc("host_connections_refused_total", "Connections refused: over --max-connections or --max-connections-per-guest.")
	hostTimedOut   = desc("host_connections_timed_out_total", "Connections closed for --hello-timeout or --frame-timeout.")
	hostProtocol   = desc("host_protocol_errors_total", "Connections closed because the guest broke the wire protocol.")
	hostDatagrams  = desc("host_datagrams_total", "Datagrams handed to the sink.")
	hostBytes      = desc("host_bytes_total", "Payload bytes handed to the sink.")
	hostFlushes    = desc("host_flushes_total", "Flush requests answered.")
	hostDuplicates = desc("host_duplicates_total", "Datagrams a guest resent after a reconnect that had been handed on already: not handed on twice.")
	hostDropped    = desc("host_dropped_datagrams_total", "Datagrams not handed on, by reason: sink_refused (the sink refused them), guest_queue_full (the guest's relay dropped them, as its sequence numbers tell), and the sink's own: sink_port_closed (sent over UDP while nothing listened, as the port's refusals of later sends reveal), sink_dropped (a collector or OTLP endpoint: queue full, or unreachable at shutdown), sink_rejected (refused by it for good).", "reason")
	hostPaused     = desc("host_budget_paused_seconds_total", "Time reading from guests waited for their budgets (--guest-rate), all guests together.")

	guestConns      = desc("guest_connections", "A guest's connections open now.", "guest")
	guestAccepted   = desc("guest_connections_accepted_total", "A guest's connections accepted.", "guest")
	guestDatagrams  = desc("guest_datagrams_total", "A guest's datagrams handed to the sink.", "guest")
	guestBytes      = desc("guest_bytes_total", "A guest's payload bytes handed to the sink.", "guest")
	guestFlushes    = desc("guest_flushes_total", "A guest's flush requests answered.", "guest")
	guestDuplicates = desc("guest_duplicates_total", "A guest's resent datagrams dropped as duplicates.", "guest")
	guestDropped    = desc("guest_dropped_datagrams_total", "A guest's datagrams not handed on, by reason (see katatrace_host_dropped_datagrams_total).", "guest", "reason")
	guestPaused     = desc("guest_budget_paused_seconds_total", "Time reading from a guest waited for its budget (--guest-rate).", "guest")
)

// SinkDrops reports what a sink dropped itself, by reason; nil for sinks
// that hand on as they are called.
type SinkDrops func() map[string]uint64

type hostCollector struct {
	srv  *netx.Server
	sink SinkDrops
}

// ForServer exports a host relay's counters, per guest too: a guest is a
// VM (a vsock CID, or the VMM behind a hybrid-vsock socket), kept for a
// while after its last connection so that a scrape sees its final counts.
func ForServer(srv *netx.Server, sink SinkDrops) prometheus.Collector {
	return &hostCollector{srv: srv, sink: sink}
}

func (c *hostCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{hostAccepted, hostActive, hostRefused, hostTimedOut, hostProtocol, hostDatagrams, hostBytes,
		hostFlushes, hostDuplicates, hostDropped, hostPaused, guestConns, guestAccepted, guestDatagrams, guestBytes, guestFlushes,
		guestDuplicates, guestDropped, guestPaused} {
		ch <- d
	}
}

func (c *hostCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.srv.Stats()
	ch <- counter(hostAccepted, s.Accepted)
	ch <- gauge(hostActive, float64(s.Active))
	ch <- counter(hostRefused, s.Refused)
	ch <- counter(hostTimedOut, s.TimedOut)
	ch <- counter(hostProtocol, s.ProtocolErrors)
	ch <- counter(hostDatagrams, s.Datagrams)
	ch <- counter(hostBytes, s.Bytes)
	ch <- counter(hostFlushes, s.Flushes)
	ch <- counter(hostDuplicates, s.Duplicates)
	ch <- counter(hostDropped, s.SinkErrors, "sink_refused")
	ch <- counter(hostDropped, s.GuestDropped, "guest_queue_full")
	if c.sink != nil {
		for reason, n := range c.sink() {
			ch <- counter(hostDropped, n, reason)
		}
	}
	ch <- prometheus.MustNewConstMetric(hostPaused, prometheus.CounterValue, s.Paused.Seconds())
	for _, g := range c.srv.Guests() {
		ch <- gauge(guestConns, float64(g.Connections), g.Guest)
		ch <- counter(guestAccepted, g.Accepted, g.Guest)
		ch <- counter(guestDatagrams, g.Datagrams, g.Guest)
		ch <- counter(guestBytes, g.Bytes, g.Guest)
		ch <- counter(guestFlushes, g.Flushes, g.Guest)
		ch <- counter(guestDuplicates, g.Duplicates, g.Guest)
		ch <- counter(guestDropped, g.SinkErrors, g.Guest, "sink_refused")
		ch <- counter(guestDropped, g.GuestDropped, g.Guest, "guest_queue_full")
		ch <- prometheus.MustNewConstMetric(guestPaused, prometheus.CounterValue, g.Paused.Seconds(), g.Guest)
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
)

// Relay is one guest relay to export, named by the kind of its stream.
type Relay struct {
	Kind  netx.Kind
	Stats func() netx.ForwarderStats
}

type relayCollector []Relay

// ForRelays exports guest relays' counters.
func ForRelays(rs ...Relay) prometheus.Collector { return relayCollector(rs) }

func (c relayCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{relayReceived, relaySent, relaySentBytes, relayConfirmed, relayDropped, relayQueued,
		relayQueueBytes, relayUnacked, relayConnects, relayDialFails, relayFlushes, relayConnected} {
		ch <- d
	}
}

func (c relayCollector) Collect(ch chan<- prometheus.Metric) {
	for _, r := range c {
		s, k := r.Stats(), r.Kind.String()
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
	}
}
