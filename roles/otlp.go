package roles

import (
	"fmt"
	"strings"
	"time"

	"github.com/katatrace/katatrace/sink"
)

// traceSinkFlags are the flags of a host role whose --to is a sink.Target
// (vsock-to-udp-server, kata-trace-forwarder): besides the address, the
// collector's queue, the printer's idle time and the OTLP options.
type traceSinkFlags struct {
	QueueBytes ByteSize `help:"With OTLP or a collector (http://, otlp...://): bytes held while it is unreachable (drop oldest beyond)." default:"16MiB"`
	otlpOptions
	PrintIdle time.Duration `help:"With print: print a trace once no span of it arrived for this long (and at every flush; as it stands once it holds 10,000 spans or about 8 MiB, or all held traces about 64 MiB)." default:"1s"`
}

// open makes the sink to goes to; its owner closes it.
func (f *traceSinkFlags) open(rc *RunContext, to sink.Target) (sink.Sink, error) {
	out, err := to.Open(sink.Options{Stdout: rc.Stdout, Log: rc.Log, QueueBytes: int(f.QueueBytes), PrintIdle: f.PrintIdle, OTLP: f.otlpOptions.config})
	if err != nil && to.Kind == sink.KindOTLP {
		return nil, flagErr("to", err) // its TLS files and headers
	}
	return out, err
}

// otlpOptions are the OTLP sink's flags.
type otlpOptions struct {
	OTLPHeader   []string `name:"otlp-header" help:"With an OTLP --to: a header sent with every request, KEY=VALUE (a vendor's API key, say); repeatable." placeholder:"KEY=VALUE" sep:"none"`
	OTLPCAFile   string   `name:"otlp-ca-file" help:"With otlps:// or otlphttps://: the CA certificates (PEM) that verify the endpoint, instead of the system's." placeholder:"FILE" type:"path"`
	OTLPCertFile string   `name:"otlp-cert-file" help:"With otlps:// or otlphttps://: a client certificate (PEM), with --otlp-key-file." placeholder:"FILE" type:"path"`
	OTLPKeyFile  string   `name:"otlp-key-file" help:"The client certificate's private key (PEM)." placeholder:"FILE" type:"path"`
	OTLPInsecure bool     `name:"otlp-insecure-skip-verify" help:"With otlps:// or otlphttps://: do not verify the endpoint's certificate (tests only)."`

	headers map[string]string
}

func (o *otlpOptions) validate(to sink.Target) error {
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
	case to.Kind != sink.KindOTLP && (tlsFlags || len(o.headers) > 0):
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
