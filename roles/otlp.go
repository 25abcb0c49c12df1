package roles

import (
	"fmt"
	"net"
	"net/url"
	"strings"

	"github.com/katatrace/katatrace/endpoint"
	"github.com/katatrace/katatrace/sink"
)

// otlpOptions are the OTLP sink's flags.
type otlpOptions struct {
	OTLPHeader   []string `name:"otlp-header" help:"With an OTLP --to: a header sent with every request, KEY=VALUE (a vendor's API key, say); repeatable." placeholder:"KEY=VALUE" sep:"none"`
	OTLPCAFile   string   `name:"otlp-ca-file" help:"With otlps:// or otlphttps://: the CA certificates (PEM) that verify the endpoint, instead of the system's." placeholder:"FILE" type:"path"`
	OTLPCertFile string   `name:"otlp-cert-file" help:"With otlps:// or otlphttps://: a client certificate (PEM), with --otlp-key-file." placeholder:"FILE" type:"path"`
	OTLPKeyFile  string   `name:"otlp-key-file" help:"The client certificate's private key (PEM)." placeholder:"FILE" type:"path"`
	OTLPInsecure bool     `name:"otlp-insecure-skip-verify" help:"With otlps:// or otlphttps://: do not verify the endpoint's certificate (tests only)."`

	headers map[string]string
}

func (o *otlpOptions) validate(to jaegerSink) error {
	o.headers = nil
	for _, h := range o.OTLPHeader {
		k, v, ok := strings.Cut(h, "=")
		k = strings.TrimSpace(k)
		if !ok || k == "" || strings.ContainsAny(k, " \t\r\n:()<>@,;\\\"/[]?={}") || strings.ContainsAny(v, "\r\n") {
			return flagErr("otlp-header", fmt.Errorf("%q is not KEY=VALUE with a header name as KEY (e.g. api-key=SECRET)", h))
		}
		if o.headers == nil {
			o.headers = map[string]string{}
		}
		o.headers[strings.ToLower(k)] = v
	}
	tlsFlags := o.OTLPCAFile != "" || o.OTLPCertFile != "" || o.OTLPKeyFile != "" || o.OTLPInsecure
	switch {
	case to.Kind != sinkOTLP && (tlsFlags || len(o.headers) > 0):
		return flagErr("to", fmt.Errorf("--otlp-* options need an OTLP --to (otlp://, otlps://, otlphttp://, otlphttps://), not %s", to))
	case tlsFlags && !to.OTLP.TLS:
		return flagErr("to", fmt.Errorf("TLS options need otlps:// or otlphttps://, not %s", to))
	case (o.OTLPCertFile == "") != (o.OTLPKeyFile == ""):
		return flagErr("otlp-cert-file", fmt.Errorf("a client certificate needs --otlp-cert-file and --otlp-key-file both"))
	}
	return nil
}

// config completes the --to's endpoint with the options.
func (o *otlpOptions) config(cfg sink.OTLPConfig) sink.OTLPConfig {
	cfg.CAFile, cfg.CertFile, cfg.KeyFile, cfg.Insecure, cfg.Headers = o.OTLPCAFile, o.OTLPCertFile, o.OTLPKeyFile, o.OTLPInsecure, o.headers
	return cfg
}

// parseOTLP reads an OTLP --to: otlp://HOST:PORT and otlps:// (gRPC),
// otlphttp://HOST:PORT[/PATH] and otlphttps:// (HTTP; the path defaults
// to /v1/traces).
func parseOTLP(s string) (sink.OTLPConfig, error) {
	bad := func(reason, example string) (sink.OTLPConfig, error) {
		return sink.OTLPConfig{}, &endpoint.AddrError{Value: s, Reason: reason, Example: example}
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
		return sink.OTLPConfig{GRPC: true, Endpoint: u.Host, TLS: u.Scheme == "otlps"}, nil
	case "otlphttp", "otlphttps":
		path := u.Path
		if path == "" || path == "/" {
			path = "/v1/traces"
		}
		scheme := strings.TrimPrefix(u.Scheme, "otlp")
		return sink.OTLPConfig{Endpoint: scheme + "://" + u.Host + path, TLS: scheme == "https"}, nil
	}
	return bad("unknown scheme "+u.Scheme+": otlp, otlps, otlphttp or otlphttps", "otlphttp://127.0.0.1:4318")
}
