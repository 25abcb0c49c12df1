package sink

import (
	"bytes"
	"cmp"
	gz "compress/gzip"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/katatrace/katatrace/guestid"
	"github.com/katatrace/katatrace/jaegerthrift"
	"go.opentelemetry.io/collector/pdata/ptrace"
	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"
	"golang.org/x/crypto/x509roots/fallback/bundle"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/encoding/gzip"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// OTLPConfig is an OTLP endpoint: gRPC (HOST:PORT) or HTTP (a URL ending
// in /v1/traces), with TLS and headers.
type OTLPConfig struct {
	GRPC     bool
	Endpoint string // gRPC: HOST:PORT; HTTP: the URL
	TLS      bool
	// CAFile verifies the server (default: the system's roots); CertFile
	// and KeyFile are a client certificate; Insecure skips verification
	// (tests only).
	CAFile, CertFile, KeyFile string
	Insecure                  bool
	Headers                   map[string]string // sent with every request (API keys)
	Timeout                   time.Duration     // one export request; 0: 10 s
	Gzip                      bool              // compress requests (gRPC's gzip, HTTP's Content-Encoding)
	// Resource is added to every resource that lacks it
	// (OTEL_RESOURCE_ATTRIBUTES): what the agent or the host set stays.
	Resource []Attr
}

// fallbackRoots gives Go's x509 the roots of golang.org/x/crypto's bundle
// for where the system has none (a distroless image, katatrace's own):
// otlps:// and an https:// collector at a public endpoint work there too.
// The system's roots, where there are any, stay the ones used. Parsed here, by a TLS sink that takes
// the system's roots, and not in an init (the package fallback's way): that
// costs every role's start 3 MB and a few ms, guest relays included.
var fallbackRoots = sync.OnceFunc(func() {
	p := x509.NewCertPool()
	for c := range bundle.Roots() {
		cert, err := x509.ParseCertificate(c.Certificate)
		if err != nil {
			panic("x509roots bundle: " + err.Error()) // as the package fallback does: its own tests parse each
		}
		if c.Constraint == nil {
			p.AddCert(cert)
		} else {
			p.AddCertWithConstraint(cert, c.Constraint)
		}
	}
	x509.SetFallbackRoots(p)
})

// tlsConfig builds the TLS settings, or nil without TLS.
func (c OTLPConfig) tlsConfig() (*tls.Config, error) {
	if !c.TLS {
		return nil, nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: c.Insecure} // Insecure: tests only, by flag
	if c.CAFile == "" {
		fallbackRoots()
	} else {
		pem, err := os.ReadFile(c.CAFile)
		if err != nil {
			return nil, fmt.Errorf("CA file: %w", err)
		}
		cfg.RootCAs = x509.NewCertPool()
		if !cfg.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("CA file %s: no PEM certificate in it", c.CAFile)
		}
	}
	if (c.CertFile == "") != (c.KeyFile == "") {
		return nil, errors.New("a client certificate needs both its certificate and its key file")
	}
	if c.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("client certificate: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

// NewOTLPSink sends to an OTLP endpoint (an OpenTelemetry Collector,
// Jaeger v2, Tempo, a vendor): each Jaeger datagram becomes one export
// request, translated by the OpenTelemetry Collector's Jaeger translator,
// its resource naming the guest (AttrGuest).
func NewOTLPSink(cfg OTLPConfig, maxBytes, workers int, log *slog.Logger) (*CollectorSink, error) {
	tc, err := cfg.tlsConfig()
	if err != nil {
		return nil, err
	}
	timeout := cmp.Or(cfg.Timeout, defaultTimeout)
	enc := otlpEncoder{resource: cfg.Resource}
	if !cfg.GRPC {
		b := otlpHTTP{otlpEncoder: enc, url: cfg.Endpoint, headers: cfg.Headers, gzip: cfg.Gzip, client: httpClient(workers, timeout, tc)}
		c := newCollectorSink(cfg.Endpoint, b, maxBytes, workers, log)
		c.timeout = timeout
		return c, nil
	}
	creds := insecure.NewCredentials()
	if tc != nil {
		creds = credentials.NewTLS(tc)
	}
	cc, err := grpc.NewClient(cfg.Endpoint, grpc.WithTransportCredentials(creds))
	if err != nil {
		return nil, fmt.Errorf("OTLP gRPC %s: %w", cfg.Endpoint, err)
	}
	b := otlpGRPC{otlpEncoder: enc, conn: cc, md: metadata.New(cfg.Headers), opts: []grpc.CallOption{grpc.ForceCodecV2(rawCodec{})}}
	if cfg.Gzip {
		b.opts = append(b.opts, grpc.UseCompressor(gzip.Name))
	}
	scheme := "otlp://"
	if cfg.TLS {
		scheme = "otlps://"
	}
	c := newCollectorSink(scheme+cfg.Endpoint, b, maxBytes, workers, log)
	c.timeout = timeout
	return c, nil
}

// Resource attributes katatrace adds to a guest's spans: which VM sent
// them (a vsock CID, or the hybrid-vsock socket), and over which
// connection.
const (
	AttrGuest     = "katatrace.guest"
	AttrGuestPeer = "katatrace.guest.peer"
)

// otlpEncoder makes OTLP export requests, adding the configured resource
// attributes (OTLPConfig.Resource).
type otlpEncoder struct{ resource []Attr }

// encodeTraces is the OTLP export request of td, its resources naming the
// guest and the connection it came over (AttrGuest, AttrGuestPeer), then
// holding e.resource's attributes where they hold none of that key, and
// its number of spans.
func (e otlpEncoder) encodeTraces(td ptrace.Traces, from guestid.ID) ([]byte, int, error) {
	rss := td.ResourceSpans()
	for i := range rss.Len() {
		attrs := rss.At(i).Resource().Attributes()
		attrs.PutStr(AttrGuest, from.Guest)
		attrs.PutStr(AttrGuestPeer, from.Conn)
		for _, a := range e.resource {
			if _, ok := attrs.Get(a.Key); !ok {
				attrs.PutStr(a.Key, a.Value)
			}
		}
	}
	body, err := ptraceotlp.NewExportRequestFromTraces(td).MarshalProto()
	if err != nil {
		return nil, 0, fmt.Errorf("encode OTLP: %w", err)
	}
	return body, td.SpanCount(), nil
}

// adds are the attributes encodeTraces puts on every resource of from's.
func (e otlpEncoder) adds(from guestid.ID) ResourceAdds {
	return ResourceAdds{Set: []Attr{{AttrGuest, from.Guest}, {AttrGuestPeer, from.Conn}}, Default: e.resource}
}

// encode is the OTLP export request of one Jaeger datagram.
func (e otlpEncoder) encode(p []byte, from guestid.ID) ([]byte, int, error) {
	td, err := jaegerthrift.ToTraces(p)
	if err != nil {
		return nil, 0, err
	}
	return e.encodeTraces(td, from)
}

// otlpHTTP is OTLP/HTTP with protobuf bodies.
type otlpHTTP struct {
	otlpEncoder
	url     string
	headers map[string]string
	gzip    bool
	client  *http.Client
}

func (o otlpHTTP) send(ctx context.Context, body []byte) error {
	headers := o.headers
	if o.gzip {
		var err error
		if body, err = gzipped(body); err != nil {
			return &rejection{reason: err.Error()}
		}
		headers = maps.Clone(headers)
		if headers == nil {
			headers = map[string]string{}
		}
		headers["Content-Encoding"] = "gzip"
	}
	// The OTLP specification's retryable statuses; any other is final.
	resp, err := postHTTP(ctx, o.client, o.url, "application/x-protobuf", headers, body, func(status int) bool {
		switch status {
		case http.StatusTooManyRequests, http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
			return true
		}
		return false
	})
	if err != nil {
		return withCause(err, otlpHTTPCause)
	}
	r := ptraceotlp.NewExportResponse()
	if r.UnmarshalProto(resp) != nil {
		return nil // accepted: an answer that is no ExportTraceServiceResponse says no more
	}
	return partialOf(r)
}

// otlpHTTPCause is the likely cause of an OTLP/HTTP endpoint's refusal or
// protocol error.
func otlpHTTPCause(status int, protocol string) string {
	switch {
	case protocol != "":
		return "the endpoint answered in HTTP/2 frames, not HTTP/1: is it OTLP/gRPC (port 4317)? for OTLP/gRPC give otlp://HOST:PORT"
	case status == http.StatusNotFound || status == http.StatusMethodNotAllowed:
		return "no OTLP/HTTP receiver at this URL: OTLP/HTTP's path is /v1/traces, on port 4318; a Jaeger collector is --to http://HOST:14268/api/traces"
	case status == http.StatusUnsupportedMediaType:
		return "the endpoint does not take OTLP's protobuf bodies: is it OTLP/HTTP?"
	}
	return ""
}

// gzipped is body compressed.
func gzipped(body []byte) ([]byte, error) {
	var b bytes.Buffer
	zw := gzipWriters.Get().(*gz.Writer)
	defer gzipWriters.Put(zw)
	zw.Reset(&b)
	if _, err := zw.Write(body); err != nil {
		return nil, fmt.Errorf("gzip: %w", err)
	}
	if err := zw.Close(); err != nil {
		return nil, fmt.Errorf("gzip: %w", err)
	}
	return b.Bytes(), nil
}

var gzipWriters = sync.Pool{New: func() any { return gz.NewWriter(nil) }}

func (o otlpHTTP) reset() { o.client.CloseIdleConnections() }
func (o otlpHTTP) close() { o.client.CloseIdleConnections() }

// otlpGRPC is OTLP/gRPC.
type otlpGRPC struct {
	otlpEncoder
	conn *grpc.ClientConn
	md   metadata.MD
	opts []grpc.CallOption // the raw codec; gzip
}

// exportMethod is OTLP's trace export, as gRPC names it.
const exportMethod = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"

func (o otlpGRPC) send(ctx context.Context, body []byte) error {
	var answer []byte
	err := o.conn.Invoke(metadata.NewOutgoingContext(ctx, o.md), exportMethod, &body, &answer, o.opts...)
	switch status.Code(err) {
	case codes.OK:
		resp := ptraceotlp.NewExportResponse()
		if resp.UnmarshalProto(answer) != nil {
			return nil // accepted: an answer that is no ExportTraceServiceResponse says no more
		}
		return partialOf(resp)
	// The OTLP specification's retryable codes; any other is final.
	case codes.Canceled, codes.DeadlineExceeded, codes.Aborted, codes.OutOfRange, codes.Unavailable, codes.DataLoss:
		if p := grpcProtocolError(err); p != "" {
			// Not down: another protocol answered, and will again.
			return &rejection{reason: err.Error(), protocol: true, cause: p}
		}
		return err
	case codes.ResourceExhausted:
		// Retryable only when the server says when (the specification:
		// without RetryInfo it is a final answer).
		if _, ok := throttleOf(err); ok {
			return err
		}
	}
	return &rejection{reason: err.Error()}
}

// grpcProtocolError is the likely cause of err when it says that the
// endpoint does not speak gRPC, or "".
func grpcProtocolError(err error) string {
	msg := err.Error()
	switch {
	case strings.Contains(msg, "http2: frame too large"):
		// An HTTP/1 server's answer read as an HTTP/2 frame.
		return "the endpoint answered in HTTP/1, not gRPC: is it OTLP/HTTP (port 4318) or a Jaeger collector? for OTLP/HTTP give otlphttp://HOST:PORT"
	case tlsRefused(err):
		return noTLS
	case strings.Contains(msg, "missing selected ALPN property"):
		return "the TLS endpoint does not offer HTTP/2: is it OTLP/HTTP (port 4318)? for OTLP/HTTP give otlphttps://HOST:PORT"
	}
	return ""
}

// partialOf is a partial success an endpoint answered, or nil: spans it
// rejected from a request it took.
func partialOf(r ptraceotlp.ExportResponse) error {
	ps := r.PartialSuccess()
	if ps.RejectedSpans() <= 0 {
		return nil
	}
	return &partialSuccess{rejected: uint64(ps.RejectedSpans()), reason: ps.ErrorMessage()}
}

// reset ends the connection's wait before reconnecting, if any.
func (o otlpGRPC) reset() { o.conn.ResetConnectBackoff() }
func (o otlpGRPC) close() { _ = o.conn.Close() }

// rawCodec has gRPC send a request's bytes as they are, and hand back the
// answer's: a queued body is already an ExportTraceServiceRequest's
// encoding (requests concatenate), which a message type would decode
// only to encode again. It is named proto, as the bytes are.
type rawCodec struct{}

func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	b, ok := v.(*[]byte)
	if !ok {
		return nil, fmt.Errorf("raw codec: %T is not bytes", v)
	}
	return mem.BufferSlice{mem.SliceBuffer(*b)}, nil
}

func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	b, ok := v.(*[]byte)
	if !ok {
		return fmt.Errorf("raw codec: %T is not bytes", v)
	}
	*b = data.Materialize()
	return nil
}

func (rawCodec) Name() string { return "proto" }
