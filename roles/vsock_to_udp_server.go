package roles

import (
	"bufio"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/katatrace/katatrace/endpoint"
	"github.com/katatrace/katatrace/hostrelay"
	"github.com/katatrace/katatrace/jaegerthrift"
	"github.com/katatrace/katatrace/sink"
	"github.com/katatrace/katatrace/wire"
)

func init() {
	register(Role{
		Name: "vsock-to-udp-server",
		Help: "Host: receive guests' Jaeger datagrams and hand each, whole, to the Jaeger agent's UDP port.",
		New:  func() Command { return &udpServer{} },
	})
}

type udpServer struct {
	From       []endpoint.Addr `help:"${from_guest_help}" default:"vsock://any:6831"`
	To         jaegerSink      `help:"udp://HOST:PORT or unixgram:///path: Jaeger's compact Thrift port, each datagram as it came; http://HOST:14268/api/traces: a Jaeger collector, over HTTP; otlp://HOST:4317 (otlps:// with TLS): OTLP over gRPC; otlphttp://HOST:4318[/v1/traces] (otlphttps://): OTLP over HTTP, to an OpenTelemetry Collector, Jaeger v2, Tempo or a vendor; print: each trace as a tree on stdout; jsonl: one JSON object per span on stdout." default:"udp://127.0.0.1:6831"`
	QueueBytes ByteSize        `help:"With a collector (http://, otlp...://): bytes of batches held while it is unreachable (drop oldest beyond)." default:"16MiB"`
	otlpOptions
	PrintIdle time.Duration `help:"With print: print a trace once no span of it arrived for this long (and at every guest flush)." default:"1s"`
	RawSplit  string        `help:"How to find datagram boundaries in a raw (socat) guest stream: thrift walks the emitBatch messages and drops what does not parse; read takes each read as one datagram, as socat does." enum:"thrift,read" default:"thrift"`
	hostRelay
}

func (c *udpServer) Validate() error {
	if err := checkFrom(c.From); err != nil {
		return err
	}
	if err := c.limits(); err != nil {
		return err
	}
	if c.To.Kind == sinkDatagram {
		if err := c.To.Addr.Require("the Jaeger relay sends to", endpoint.SchemeUDP, endpoint.SchemeUnixgram); err != nil {
			return flagErr("to", err)
		}
	}
	if err := c.otlpOptions.validate(c.To); err != nil {
		return err
	}
	if c.QueueBytes < wire.MaxFrameSize {
		return fmt.Errorf("--queue-bytes: %s is too small: a batch can take %d bytes", c.QueueBytes, wire.MaxFrameSize)
	}
	return nil
}

// sinkKind is what vsock-to-udp-server's --to names.
type sinkKind uint8

const (
	sinkDatagram  sinkKind = iota // udp:// or unixgram://, each datagram as it came
	sinkCollector                 // http(s)://: a Jaeger collector
	sinkPrint                     // print: trees on stdout
	sinkJSONL                     // jsonl: a JSON object per span on stdout
	sinkOTLP                      // otlp://, otlps://, otlphttp://, otlphttps://
)

// jaegerSink is the --to of vsock-to-udp-server: a datagram address, an
// HTTP collector, or a printer.
type jaegerSink struct {
	Kind sinkKind
	Addr endpoint.Addr   // sinkDatagram
	URL  string          // sinkCollector, and sinkOTLP as given
	OTLP sink.OTLPConfig // sinkOTLP, but for the options' flags
}

func (j *jaegerSink) UnmarshalText(b []byte) error {
	s := string(b)
	switch {
	case s == "print":
		*j = jaegerSink{Kind: sinkPrint}
		return nil
	case s == "jsonl":
		*j = jaegerSink{Kind: sinkJSONL}
		return nil
	case strings.HasPrefix(s, "otlp"):
		cfg, err := parseOTLP(s)
		if err != nil {
			return err
		}
		*j = jaegerSink{Kind: sinkOTLP, URL: s, OTLP: cfg}
		return nil
	case strings.HasPrefix(s, "http://") || strings.HasPrefix(s, "https://"):
		u, err := url.Parse(s)
		if err != nil || u.Host == "" {
			return &endpoint.AddrError{Value: s, Reason: "not a URL with a host", Example: "http://127.0.0.1:14268/api/traces"}
		}
		if u.Path == "" || u.Path == "/" {
			u.Path = "/api/traces"
		}
		*j = jaegerSink{Kind: sinkCollector, URL: u.String()}
		return nil
	}
	var a endpoint.Addr
	if err := a.UnmarshalText(b); err != nil {
		return fmt.Errorf("%w; or http://HOST:14268/api/traces, otlp://HOST:4317, otlphttp://HOST:4318, print or jsonl", err)
	}
	*j = jaegerSink{Kind: sinkDatagram, Addr: a}
	return nil
}

func (j jaegerSink) String() string {
	switch j.Kind {
	case sinkCollector, sinkOTLP:
		return j.URL
	case sinkPrint:
		return "print"
	case sinkJSONL:
		return "jsonl"
	}
	return j.Addr.String()
}

// open makes the sink; the host relay closes it after its drain.
func (j jaegerSink) open(rc *RunContext, c *udpServer) (sink.Sink, error) {
	switch j.Kind {
	case sinkPrint:
		return sink.NewTreeSink(rc.Stdout, c.PrintIdle), nil
	case sinkJSONL:
		return sink.NewJSONLSink(rc.Stdout), nil
	case sinkCollector:
		return sink.NewCollectorSink(j.URL, int(c.QueueBytes), 2, rc.Log), nil
	case sinkOTLP:
		s, err := sink.NewOTLPSink(c.otlpOptions.config(j.OTLP), int(c.QueueBytes), 2, rc.Log)
		if err != nil {
			return nil, flagErr("to", err)
		}
		return s, nil
	}
	return sink.DialPacketSink(j.Addr)
}

func (c *udpServer) Run(rc *RunContext) error {
	sink, err := c.To.open(rc, c)
	if err != nil {
		return err
	}
	cfg := hostrelay.ServerConfig{Kind: wire.KindJaeger, Sink: sink, Logger: rc.Log}
	if c.RawSplit == "thrift" {
		cfg.RawSplit = func(peer string) bufio.SplitFunc {
			return jaegerthrift.NewBatchSplitter(rc.Log.With("peer", peer)).Split
		}
	}
	return c.serve(rc, c.From, cfg, c.To.String())
}
