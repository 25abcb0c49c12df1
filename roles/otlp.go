package roles

import (
	"cmp"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/alecthomas/kong"
	"github.com/katatrace/katatrace/sink"
)

// otelHelp says, in a --to's help, how OpenTelemetry's environment stands in for it.
const otelHelp = " Not given (nor $KATATRACE_TO): OpenTelemetry's $OTEL_EXPORTER_OTLP_TRACES_ENDPOINT or $OTEL_EXPORTER_OTLP_ENDPOINT " +
	"(http:// in the clear, https:// with TLS; over HTTP the latter gets /v1/traces appended), spoken as $OTEL_EXPORTER_OTLP_PROTOCOL says " +
	"(grpc, the default, or http/protobuf); $OTEL_EXPORTER_OTLP_INSECURE=true: a gRPC HOST:PORT in the clear. " +
	"$OTEL_RESOURCE_ATTRIBUTES (KEY=VALUE,...) adds to every resource sent over OTLP what the agent and the host did not set."

// traceSinkFlags are the flags of a host role whose --to is a sink.Target
// (vsock-to-udp-server, kata-trace-forwarder): besides the address, the
// collector's queue, the printer's idle time and the OTLP options.
type traceSinkFlags struct {
	QueueBytes ByteSize `help:"With OTLP or a collector (http://, otlp...://): bytes held while it is unreachable (drop oldest beyond)." default:"16MiB"`
	// 16: a hundred guests flushing every second make about 100 requests
	// a second (a Jaeger request holds one guest's batches); a worker
	// makes at most 20 a second 50 ms away; 5 would just keep up.
	CollectorWorkers int           `name:"collector-workers" help:"With OTLP or a collector (http://, otlp...://): requests in flight at once (over HTTP each over a connection kept open; over gRPC as streams of one connection). The default keeps up with a collector 50 ms away and 100 guests each flushing every second (a Jaeger request holds one guest's batches: about 100 requests a second, a worker at most 20), with room for slower answers and an outage's backlog." default:"16"`
	CollectorTimeout time.Duration `name:"collector-timeout" help:"With a Jaeger collector (http://): how long one request may take (then it is retried). OTLP's is --otlp-timeout." default:"10s"`
	otlpOptions
	PrintIdle time.Duration `help:"With print: print a trace once no span of it arrived for this long (and at every flush; as it stands once it holds 10,000 spans or about 8 MiB, or all held traces about 64 MiB)." default:"1s"`
}

// open makes the sink to goes to; its owner closes it.
func (f *traceSinkFlags) open(rc *RunContext, to sink.Target) (sink.Sink, error) {
	out, err := to.Open(sink.Options{Stdout: rc.Stdout, Log: rc.Log, QueueBytes: int(f.QueueBytes), PrintIdle: f.PrintIdle,
		Workers: f.CollectorWorkers, CollectorTimeout: f.CollectorTimeout, OTLP: f.otlpOptions.config})
	if err != nil && to.Kind == sink.KindOTLP {
		return nil, flagErr("to", err) // its TLS files and headers
	}
	return out, err
}

// maxWorkers bounds --collector-workers: each is a connection kept open
// to the collector, and more than this is a typo, not a plan.
const maxWorkers = 1024

// validateCollector checks the collector's flags against to: each given
// must be for a destination that takes it.
func (f *traceSinkFlags) validateCollector(kctx *kong.Context, to sink.Target) error {
	switch {
	case f.CollectorWorkers < 1 || f.CollectorWorkers > maxWorkers:
		return flagErr("collector-workers", fmt.Errorf("%d: give 1 to %d requests in flight", f.CollectorWorkers, maxWorkers))
	case f.CollectorTimeout <= 0:
		return flagErr("collector-timeout", fmt.Errorf("%v: give a positive time", f.CollectorTimeout))
	}
	if as, ok := givenAs(kctx, "collector-workers"); ok && to.Kind != sink.KindCollector && to.Kind != sink.KindOTLP {
		return fmt.Errorf("%s needs a collector or OTLP destination (http://, otlp://, otlps://, otlphttp://, otlphttps://), and spans go to %s", as, to)
	}
	if as, ok := givenAs(kctx, "collector-timeout"); ok && to.Kind != sink.KindCollector {
		also := ""
		if to.Kind == sink.KindOTLP {
			also = " (for OTLP: --otlp-timeout)"
		}
		return fmt.Errorf("%s needs a Jaeger collector destination (http://HOST:14268/api/traces), and spans go to %s%s", as, to, also)
	}
	return nil
}

// readOTEL reads OpenTelemetry's environment (sink.ReadOTELEnv); an
// invalid value is a usage error naming its variable.
//
// A role whose destination is given and is no OTLP endpoint (a Jaeger
// port, stdout) reads only the service name (as --trace-name, which
// every sink uses), and no value of them stops it: the exporter's
// variables are another program's.
func readOTEL(otlp bool) (sink.OTELEnv, error) {
	if otlp {
		return sink.ReadOTELEnv(os.LookupEnv)
	}
	for _, names := range [][]string{{"OTEL_SERVICE_NAME", "OTEL_RESOURCE_ATTRIBUTES"}, {"OTEL_SERVICE_NAME"}} {
		env, err := sink.ReadOTELEnv(func(k string) (string, bool) {
			if slices.Contains(names, k) {
				return os.LookupEnv(k)
			}
			return "", false
		})
		if err == nil {
			return sink.OTELEnv{ServiceName: env.ServiceName}, nil
		}
	}
	return sink.OTELEnv{}, nil
}

// envTarget is the OTLP endpoint OpenTelemetry's environment names, if it
// names one.
func envTarget(env sink.OTELEnv) (sink.Target, bool, error) {
	if env.Endpoint == "" {
		return sink.Target{}, false, nil
	}
	t, err := sink.OTLPTargetFromURL(env.Endpoint, cmp.Or(env.Protocol, sink.ProtoGRPC), env.Protocol == "", env.Base, env.Insecure)
	if err != nil {
		return t, false, fmt.Errorf("$%s: %w", env.EndpointVar, err)
	}
	return t, true, nil
}

// given says whether a flag was given, on the command line or by its
// KATATRACE_* twin, never by its default. (kong marks a value Set from
// its default too; the flags the command line gave are in its path.)
func given(kctx *kong.Context, name string) bool {
	_, ok := givenAs(kctx, name)
	return ok
}

// givenAs is given, with how the flag was given: --NAME, or --NAME (from
// $KATATRACE_NAME).
func givenAs(kctx *kong.Context, name string) (string, bool) {
	for _, p := range kctx.Path {
		if p.Flag != nil && p.Flag.Name == name && !p.Resolved {
			return "--" + name, true
		}
	}
	for _, f := range kctx.Flags() {
		if f.Name != name {
			continue
		}
		for _, env := range f.Tag.Envs {
			if _, ok := os.LookupEnv(env); ok {
				return "--" + name + " (from $" + env + ")", true
			}
		}
	}
	return "", false
}

// otlpOptions are the OTLP sink's flags.
type otlpOptions struct {
	OTLPHeader      []string      `name:"otlp-header" help:"With an OTLP --to: a header sent with every request, KEY=VALUE (a vendor's API key, say); repeatable. Not given: $OTEL_EXPORTER_OTLP_[TRACES_]HEADERS (KEY=VALUE,..., percent-encoded)." placeholder:"KEY=VALUE" sep:"none"`
	OTLPCAFile      string        `name:"otlp-ca-file" help:"With otlps:// or otlphttps://: the CA certificates (PEM) that verify the endpoint, instead of the system's. Not given: $OTEL_EXPORTER_OTLP_[TRACES_]CERTIFICATE." placeholder:"FILE" type:"path"`
	OTLPCertFile    string        `name:"otlp-cert-file" help:"With otlps:// or otlphttps://: a client certificate (PEM), with --otlp-key-file. Not given: $OTEL_EXPORTER_OTLP_[TRACES_]CLIENT_CERTIFICATE." placeholder:"FILE" type:"path"`
	OTLPKeyFile     string        `name:"otlp-key-file" help:"The client certificate's private key (PEM). Not given: $OTEL_EXPORTER_OTLP_[TRACES_]CLIENT_KEY." placeholder:"FILE" type:"path"`
	OTLPInsecure    bool          `name:"otlp-insecure-skip-verify" help:"With otlps:// or otlphttps://: do not verify the endpoint's certificate (tests only)."`
	OTLPTimeout     time.Duration `name:"otlp-timeout" help:"With OTLP: how long one export request may take. Not given: $OTEL_EXPORTER_OTLP_[TRACES_]TIMEOUT (milliseconds)." default:"10s"`
	OTLPCompression string        `name:"otlp-compression" help:"With OTLP: gzip compresses the requests (gRPC and HTTP). Not given: $OTEL_EXPORTER_OTLP_[TRACES_]COMPRESSION." enum:"none,gzip" default:"none"`

	headers       map[string]string
	ca, cert, key string
	timeout       time.Duration
	gzip          bool
	resource      []sink.Attr
}

// validate checks the options against to, and completes each not given
// from OpenTelemetry's environment (env).
func (o *otlpOptions) validate(kctx *kong.Context, to sink.Target, env sink.OTELEnv) error {
	o.headers = nil
	for _, h := range o.OTLPHeader {
		k, v, ok := strings.Cut(h, "=")
		k = strings.TrimSpace(k)
		if !ok || !sink.ValidHeader(k, v) {
			return flagErr("otlp-header", fmt.Errorf("%q is not KEY=VALUE with a header name as KEY (e.g. api-key=SECRET)", h))
		}
		if o.headers == nil {
			o.headers = map[string]string{}
		}
		o.headers[strings.ToLower(k)] = v
	}
	// The error names the option given, not --to: the destination may
	// be a default or come from the environment.
	// An option counts when it asks for something (a file, true, a
	// header), not when it was given its zero value.
	var tlsFlag, otlpFlag string
	for _, f := range []struct {
		name string
		set  bool
	}{
		{"otlp-ca-file", o.OTLPCAFile != ""}, {"otlp-cert-file", o.OTLPCertFile != ""}, {"otlp-key-file", o.OTLPKeyFile != ""},
		{"otlp-insecure-skip-verify", o.OTLPInsecure},
		{"otlp-header", len(o.headers) > 0}, {"otlp-timeout", given(kctx, "otlp-timeout")}, {"otlp-compression", given(kctx, "otlp-compression")},
	} {
		if !f.set || otlpFlag != "" {
			continue
		}
		otlpFlag, _ = givenAs(kctx, f.name)
		otlpFlag = cmp.Or(otlpFlag, "--"+f.name)
		if f.name != "otlp-header" && f.name != "otlp-timeout" && f.name != "otlp-compression" {
			tlsFlag = otlpFlag
		}
	}
	switch {
	case to.Kind != sink.KindOTLP && otlpFlag != "":
		return fmt.Errorf("%s needs an OTLP destination (otlp://, otlps://, otlphttp://, otlphttps://), and spans go to %s", otlpFlag, to)
	case tlsFlag != "" && !to.OTLP.TLS:
		return fmt.Errorf("%s needs a TLS destination (otlps://, otlphttps://, or https:// in an OTLP endpoint), and spans go to %s", tlsFlag, to)
	case (o.OTLPCertFile == "") != (o.OTLPKeyFile == ""):
		return flagErr("otlp-cert-file", fmt.Errorf("a client certificate needs --otlp-cert-file and --otlp-key-file both"))
	case o.OTLPTimeout <= 0:
		return flagErr("otlp-timeout", fmt.Errorf("%v: give a positive time", o.OTLPTimeout))
	}
	// A flag given, then OpenTelemetry's variable, then the default. The
	// variables' TLS files count only over TLS, as the SDKs take them.
	if !given(kctx, "otlp-header") {
		o.headers = env.Headers
	}
	o.ca, o.cert, o.key = o.OTLPCAFile, o.OTLPCertFile, o.OTLPKeyFile
	if to.OTLP.TLS && o.cert == "" && o.key == "" {
		o.cert, o.key = env.CertFile, env.KeyFile
		if (o.cert == "") != (o.key == "") {
			return fmt.Errorf("$OTEL_EXPORTER_OTLP_[TRACES_]CLIENT_CERTIFICATE and $OTEL_EXPORTER_OTLP_[TRACES_]CLIENT_KEY go together: one is set, the other not")
		}
	}
	if to.OTLP.TLS && o.ca == "" {
		o.ca = env.CAFile
	}
	// The files are read at the first export: a missing one is said now,
	// naming where it was given.
	for _, f := range []struct{ path, flag, env string }{
		{o.ca, "otlp-ca-file", "OTEL_EXPORTER_OTLP_[TRACES_]CERTIFICATE"},
		{o.cert, "otlp-cert-file", "OTEL_EXPORTER_OTLP_[TRACES_]CLIENT_CERTIFICATE"},
		{o.key, "otlp-key-file", "OTEL_EXPORTER_OTLP_[TRACES_]CLIENT_KEY"},
	} {
		if f.path == "" {
			continue
		}
		if _, err := os.Stat(f.path); err != nil {
			if as, ok := givenAs(kctx, f.flag); ok {
				return fmt.Errorf("%s: %w", as, err)
			}
			return fmt.Errorf("$%s: %w", f.env, err)
		}
	}
	o.timeout = o.OTLPTimeout
	if !given(kctx, "otlp-timeout") && env.Timeout > 0 {
		o.timeout = env.Timeout
	}
	o.gzip = o.OTLPCompression == "gzip"
	if !given(kctx, "otlp-compression") && env.GzipSet {
		o.gzip = env.Gzip
	}
	o.resource = env.Resource
	return nil
}

// config completes the --to's endpoint with the options.
func (o *otlpOptions) config(cfg sink.OTLPConfig) sink.OTLPConfig {
	cfg.CAFile, cfg.CertFile, cfg.KeyFile, cfg.Insecure, cfg.Headers = o.ca, o.cert, o.key, o.OTLPInsecure, o.headers
	cfg.Timeout, cfg.Gzip, cfg.Resource = o.timeout, o.gzip, o.resource
	return cfg
}
