package sink

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/katatrace/katatrace/endpoint"
)

// Kind is the kind of sink a Target names.
type Kind uint8

const (
	KindDatagram  Kind = iota // udp:// or unixgram://, each datagram as it came
	KindCollector             // http(s)://: a Jaeger collector
	KindPrint                 // print: trees on stdout
	KindJSONL                 // jsonl: a JSON object per span on stdout
	KindOTLP                  // otlp://, otlps://, otlphttp://, otlphttps://
)

// Target is where a host role's Jaeger traces go (its --to): a datagram
// address, a Jaeger collector, an OTLP endpoint, or a printer.
type Target struct {
	Kind Kind
	Addr endpoint.Addr // KindDatagram
	URL  string        // KindCollector, and KindOTLP as given
	OTLP OTLPConfig    // KindOTLP, without the TLS files and headers
}

func (j *Target) UnmarshalText(b []byte) error {
	s := string(b)
	switch {
	case s == "print":
		*j = Target{Kind: KindPrint}
		return nil
	case s == "jsonl":
		*j = Target{Kind: KindJSONL}
		return nil
	case strings.HasPrefix(s, "otlp"):
		cfg, err := parseOTLP(s)
		if err != nil {
			return err
		}
		*j = Target{Kind: KindOTLP, URL: s, OTLP: cfg}
		return nil
	case strings.HasPrefix(s, "http://") || strings.HasPrefix(s, "https://"):
		u, err := url.Parse(s)
		if err != nil || u.Host == "" {
			return &endpoint.AddrError{Value: s, Reason: "not a URL with a host", Example: "http://127.0.0.1:14268/api/traces"}
		}
		// http:// is a Jaeger collector, never OTLP: an OTLP port or path
		// given to it would be spoken to in the wrong protocol.
		if p, path := u.Port(), strings.HasSuffix(strings.TrimSuffix(u.Path, "/"), "/v1/traces"); p == "4317" || p == "4318" || path {
			// The example keeps what the address said: OTLP/HTTP for its
			// port or path, else OTLP/gRPC.
			example := "otlp://" + net.JoinHostPort(u.Hostname(), "4317")
			if p == "4318" || path {
				example = "otlphttp://" + net.JoinHostPort(u.Hostname(), cmp.Or(p, "4318")) + u.Path
			}
			return &endpoint.AddrError{Value: s, Reason: "http:// is a Jaeger collector (its /api/traces), and this is OTLP's port or path: " +
				"give otlp://HOST:4317 for OTLP/gRPC, otlphttp://HOST:4318 for OTLP/HTTP", Example: example}
		}
		if u.Path == "" || u.Path == "/" {
			u.Path = "/api/traces"
		}
		*j = Target{Kind: KindCollector, URL: u.String()}
		return nil
	}
	var a endpoint.Addr
	if err := a.UnmarshalText(b); err != nil {
		var ae *endpoint.AddrError
		if errors.As(err, &ae) && ae.Scheme == "" {
			// No scheme, or one no sink takes: list the sinks' own, the
			// example the one the address most likely meant (OTLP's port).
			example := "otlp://127.0.0.1:4317"
			if _, port, err := net.SplitHostPort(s); err == nil {
				switch port {
				case "4318":
					example = "otlphttp://127.0.0.1:4318"
				case "6831":
					example = "udp://127.0.0.1:6831"
				}
			}
			return &endpoint.AddrError{Value: s, Reason: "no sink's scheme: want otlp://HOST:4317 (OTLP/gRPC), otlphttp://HOST:4318 (OTLP/HTTP), " +
				"udp://HOST:6831 (a Jaeger agent), unixgram:///path, http://HOST:14268/api/traces (a Jaeger collector), print or jsonl", Example: example}
		}
		return fmt.Errorf("%w; or http://HOST:14268/api/traces, otlp://HOST:4317, otlphttp://HOST:4318, print or jsonl", err)
	}
	*j = Target{Kind: KindDatagram, Addr: a}
	return nil
}

func (j Target) String() string {
	switch j.Kind {
	case KindCollector, KindOTLP:
		return j.URL
	case KindPrint:
		return "print"
	case KindJSONL:
		return "jsonl"
	}
	return j.Addr.String()
}

// Options are what opening a Target takes besides the address: where the
// printers write, a collector's queue, the OTLP endpoint's TLS files and
// headers.
type Options struct {
	Stdout     io.Writer
	Log        *slog.Logger
	QueueBytes int
	PrintIdle  time.Duration
	// Workers is how many requests a collector or an OTLP sink has in
	// flight at once (0: DefaultWorkers).
	Workers int
	// CollectorTimeout bounds one request to a Jaeger collector (0: 10 s);
	// OTLP's is OTLPConfig.Timeout.
	CollectorTimeout time.Duration
	// OTLP completes an OTLP Target's endpoint (the TLS files and headers).
	OTLP func(OTLPConfig) OTLPConfig
}

// DefaultWorkers is how many requests a collector or OTLP sink has in
// flight at once unless told: enough for a collector 50 ms away and a
// hundred guests that each flush every second. A Jaeger request holds one
// guest's batches only (one Process), so such a host makes about 100
// requests a second; one worker, a round trip each, makes at most 20
// (fewer as the collector takes its time), so 5 would just keep up: 16
// leave room for slower answers and for the backlog after an outage, at
// the cost of 16 idle connections.
const DefaultWorkers = 16

// Open makes the sink; its owner closes it.
func (t Target) Open(o Options) (Sink, error) {
	switch t.Kind {
	case KindPrint:
		return NewTreeSink(o.Stdout, o.PrintIdle, o.Log), nil
	case KindJSONL:
		return NewJSONLSink(o.Stdout), nil
	case KindCollector:
		return NewCollectorSink(t.URL, o.QueueBytes, cmp.Or(o.Workers, DefaultWorkers), o.CollectorTimeout, o.Log), nil
	case KindOTLP:
		cfg := t.OTLP
		if o.OTLP != nil {
			cfg = o.OTLP(cfg)
		}
		return NewOTLPSink(cfg, o.QueueBytes, cmp.Or(o.Workers, DefaultWorkers), o.Log)
	}
	return DialPacketSink(t.Addr)
}

// parseOTLP reads an OTLP endpoint: otlp://HOST:PORT and otlps:// (gRPC),
// otlphttp://HOST:PORT[/PATH] and otlphttps:// (HTTP; the path defaults
// to /v1/traces).
func parseOTLP(s string) (OTLPConfig, error) {
	bad := func(reason, example string) (OTLPConfig, error) {
		return OTLPConfig{}, &endpoint.AddrError{Value: s, Reason: reason, Example: example}
	}
	u, err := url.Parse(s)
	if err != nil || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return bad("not an OTLP endpoint: want scheme://HOST:PORT", "otlp://127.0.0.1:4317")
	}
	host, port, err := net.SplitHostPort(u.Host)
	if err != nil || host == "" || port == "" || port == "0" {
		return bad("give the host and the port", "otlp://127.0.0.1:4317")
	}
	switch u.Scheme {
	case "otlp", "otlps":
		if u.Path != "" && u.Path != "/" {
			return bad("OTLP over gRPC takes no path", "otlp://127.0.0.1:4317")
		}
		return OTLPConfig{GRPC: true, Endpoint: u.Host, TLS: u.Scheme == "otlps"}, nil
	case "otlphttp", "otlphttps":
		path := u.Path
		if path == "" || path == "/" {
			path = "/v1/traces"
		}
		scheme := strings.TrimPrefix(u.Scheme, "otlp")
		return OTLPConfig{Endpoint: scheme + "://" + u.Host + path, TLS: scheme == "https"}, nil
	}
	return bad("unknown scheme "+u.Scheme+": otlp, otlps, otlphttp or otlphttps", "otlphttp://127.0.0.1:4318")
}
