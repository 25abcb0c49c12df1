package roles

import (
	"bufio"
	"context"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/katatrace/katatrace/netx"
	"github.com/katatrace/katatrace/tracing"
)

func init() {
	register(Role{
		Name: "vsock-to-udp-server",
		Help: "Host: receive guests' Jaeger datagrams and hand each, whole, to the Jaeger agent's UDP port.",
		New:  func() Command { return &udpServer{} },
	})
}

type udpServer struct {
	From       []netx.Addr   `help:"${from_guest_help}" default:"vsock://any:6831"`
	To         jaegerSink    `help:"udp://HOST:PORT or unixgram:///path: Jaeger's compact Thrift port, each datagram as it came; http://HOST:14268/api/traces: a Jaeger collector, over HTTP; print: each trace as a tree on stdout; jsonl: one JSON object per span on stdout." default:"udp://127.0.0.1:6831"`
	QueueBytes ByteSize      `help:"With an http:// collector: bytes of batches held while it is unreachable (drop oldest beyond)." default:"16MiB"`
	PrintIdle  time.Duration `help:"With print: print a trace once no span of it arrived for this long (and at every guest flush)." default:"1s"`
	RawSplit   string        `help:"How to find datagram boundaries in a raw (socat) guest stream: thrift walks the emitBatch messages and drops what does not parse; read takes each read as one datagram, as socat does." enum:"thrift,read" default:"thrift"`
	hostRelay
}

func (c *udpServer) Validate() error {
	if err := checkFrom(c.From); err != nil {
		return err
	}
	if c.To.Kind == "" {
		if err := c.To.Addr.Require("the Jaeger relay sends to", netx.SchemeUDP, netx.SchemeUnixgram); err != nil {
			return flagErr("to", err)
		}
	}
	if c.QueueBytes < netx.MaxFrameSize {
		return fmt.Errorf("--queue-bytes: %s is too small: a batch can take %d bytes", c.QueueBytes, netx.MaxFrameSize)
	}
	return nil
}

// jaegerSink is the --to of vsock-to-udp-server: a datagram address, an
// HTTP collector, or a printer.
type jaegerSink struct {
	Kind string // "", "http", "print" or "jsonl"
	Addr netx.Addr
	URL  string
}

func (j *jaegerSink) UnmarshalText(b []byte) error {
	s := string(b)
	switch {
	case s == "print" || s == "jsonl":
		*j = jaegerSink{Kind: s}
		return nil
	case strings.HasPrefix(s, "http://") || strings.HasPrefix(s, "https://"):
		u, err := url.Parse(s)
		if err != nil || u.Host == "" {
			return &netx.AddrError{Value: s, Reason: "not a URL with a host", Example: "http://127.0.0.1:14268/api/traces"}
		}
		if u.Path == "" || u.Path == "/" {
			u.Path = "/api/traces"
		}
		*j = jaegerSink{Kind: "http", URL: u.String()}
		return nil
	}
	a, err := netx.ParseAddr(s)
	if err != nil {
		return fmt.Errorf("%w; or http://HOST:14268/api/traces, print or jsonl", err)
	}
	*j = jaegerSink{Addr: a}
	return nil
}

func (j jaegerSink) String() string {
	switch j.Kind {
	case "":
		return j.Addr.String()
	case "http":
		return j.URL
	}
	return j.Kind
}

func (c *udpServer) Run(rc *RunContext) error {
	var sink netx.Sink
	switch c.To.Kind {
	case "print":
		ts := tracing.NewTreeSink(rc.Stdout, c.PrintIdle)
		defer ts.Close()
		sink = ts
	case "jsonl":
		sink = tracing.NewJSONLSink(rc.Stdout)
	case "http":
		cs := tracing.NewCollectorSink(c.To.URL, int(c.QueueBytes), 2, rc.Log)
		defer func() {
			ctx, cancel := context.WithTimeout(context.Background(), c.DrainTimeout)
			defer cancel()
			if err := cs.Close(ctx); err != nil {
				rc.Log.Warn("collector drain incomplete", "err", err)
			}
			s := cs.Stats()
			rc.Log.Info("collector", "url", c.To.URL, "batches_posted", s.Posted, "spans", s.Spans,
				"dropped", s.Dropped, "refused", s.Rejected, "retries", s.Retries)
		}()
		sink = cs
	default:
		ps, err := netx.DialPacketSink(c.To.Addr)
		if err != nil {
			return err
		}
		defer ps.Close()
		sink = ps
	}
	cfg := netx.ServerConfig{Kind: netx.KindJaeger, Sink: sink, Logger: rc.Log}
	if c.RawSplit == "thrift" {
		cfg.RawSplit = func(peer string) bufio.SplitFunc {
			return tracing.NewBatchSplitter(rc.Log.With("peer", peer)).Split
		}
	}
	return c.serve(rc, c.From, netx.NewServer(cfg), c.To.String())
}
