package sink

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"time"

	"github.com/katatrace/katatrace/guestid"
	"github.com/katatrace/katatrace/jaegerthrift"
	"go.opentelemetry.io/collector/pdata/ptrace"
	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
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
}

// tlsConfig builds the TLS settings, or nil without TLS.
func (c OTLPConfig) tlsConfig() (*tls.Config, error) {
	if !c.TLS {
		return nil, nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: c.Insecure} // Insecure: tests only, by flag
	if c.CAFile != "" {
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
	if !cfg.GRPC {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.TLSClientConfig = tc
		b := otlpHTTP{url: cfg.Endpoint, headers: cfg.Headers, client: &http.Client{Timeout: 10 * time.Second, Transport: tr}}
		return newCollectorSink(cfg.Endpoint, b, maxBytes, workers, log), nil
	}
	creds := insecure.NewCredentials()
	if tc != nil {
		creds = credentials.NewTLS(tc)
	}
	cc, err := grpc.NewClient(cfg.Endpoint, grpc.WithTransportCredentials(creds))
	if err != nil {
		return nil, fmt.Errorf("OTLP gRPC %s: %w", cfg.Endpoint, err)
	}
	b := otlpGRPC{conn: cc, client: ptraceotlp.NewGRPCClient(cc), md: metadata.New(cfg.Headers)}
	scheme := "otlp://"
	if cfg.TLS {
		scheme = "otlps://"
	}
	return newCollectorSink(scheme+cfg.Endpoint, b, maxBytes, workers, log), nil
}

// Resource attributes katatrace adds to a guest's spans: which VM sent
// them (a vsock CID, or the hybrid-vsock socket), and over which
// connection.
const (
	AttrGuest     = "katatrace.guest"
	AttrGuestPeer = "katatrace.guest.peer"
)

// otlpRequest is the OTLP export request of td, its resources naming the
// guest and the connection it came over (AttrGuest, AttrGuestPeer), and
// its number of spans.
func otlpRequest(td ptrace.Traces, from guestid.ID) ([]byte, int, error) {
	rss := td.ResourceSpans()
	for i := range rss.Len() {
		attrs := rss.At(i).Resource().Attributes()
		attrs.PutStr(AttrGuest, from.Guest)
		attrs.PutStr(AttrGuestPeer, from.Conn)
	}
	body, err := ptraceotlp.NewExportRequestFromTraces(td).MarshalProto()
	if err != nil {
		return nil, 0, fmt.Errorf("encode OTLP: %w", err)
	}
	return body, td.SpanCount(), nil
}

// jaegerToOTLP is the OTLP export request of one Jaeger datagram.
func jaegerToOTLP(p []byte, from guestid.ID) ([]byte, int, error) {
	td, err := jaegerthrift.ToTraces(p)
	if err != nil {
		return nil, 0, err
	}
	return otlpRequest(td, from)
}

// otlpHTTP is OTLP/HTTP with protobuf bodies.
type otlpHTTP struct {
	url     string
	headers map[string]string
	client  *http.Client
}

func (o otlpHTTP) encode(p []byte, from guestid.ID) ([]byte, int, error) {
	return jaegerToOTLP(p, from)
}

func (o otlpHTTP) send(ctx context.Context, body []byte) error {
	// The OTLP specification's retryable statuses; any other is final.
	return postHTTP(ctx, o.client, o.url, "application/x-protobuf", o.headers, body, func(status int) bool {
		switch status {
		case http.StatusTooManyRequests, http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
			return true
		}
		return false
	})
}

func (o otlpHTTP) reset() { o.client.CloseIdleConnections() }
func (o otlpHTTP) close() { o.client.CloseIdleConnections() }

// otlpGRPC is OTLP/gRPC.
type otlpGRPC struct {
	conn   *grpc.ClientConn
	client ptraceotlp.GRPCClient
	md     metadata.MD
}

func (o otlpGRPC) encode(p []byte, from guestid.ID) ([]byte, int, error) {
	return jaegerToOTLP(p, from)
}

func (o otlpGRPC) send(ctx context.Context, body []byte) error {
	req, err := traces(body)
	if err != nil {
		return &rejection{reason: err.Error()}
	}
	_, err = o.client.Export(metadata.NewOutgoingContext(ctx, o.md), req)
	switch status.Code(err) {
	case codes.OK:
		return nil
	// The OTLP specification's retryable codes; any other is final.
	case codes.Canceled, codes.DeadlineExceeded, codes.Aborted, codes.OutOfRange, codes.Unavailable, codes.DataLoss:
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

// reset ends the connection's wait before reconnecting, if any.
func (o otlpGRPC) reset() { o.conn.ResetConnectBackoff() }
func (o otlpGRPC) close() { _ = o.conn.Close() }

// traces decodes an export request again (the gRPC client takes it whole).
func traces(body []byte) (ptraceotlp.ExportRequest, error) {
	req := ptraceotlp.NewExportRequest()
	return req, req.UnmarshalProto(body)
}
