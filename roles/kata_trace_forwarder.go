package roles

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/alecthomas/kong"
	"github.com/katatrace/katatrace/endpoint"
	"github.com/katatrace/katatrace/hold"
	"github.com/katatrace/katatrace/hostrelay"
	"github.com/katatrace/katatrace/kataspan"
	"github.com/katatrace/katatrace/sink"
	"github.com/katatrace/katatrace/wire"
)

func init() {
	register(Role{
		Name: "kata-trace-forwarder",
		Help: "Host: receive the spans Kata 2.2–4.x agents send themselves (vsock port 10240; JSON or bincode SpanData) and forward them to OTLP, Jaeger or stdout. Takes the flags of Kata's own kata-trace-forwarder.",
		New:  func() Command { return &traceForwarder{} },
	})
}

// traceForwarder is Kata's host-side trace forwarder, flag for flag, on
// katatrace's host relay and sinks.
type traceForwarder struct {
	// Kata's own flags.
	VsockPort    uint32      `help:"Vsock port the agents send to (QEMU's vhost-vsock; with --socket-path, the suffix of the socket: PATH_PORT)." default:"10240"`
	VsockCID     string      `name:"vsock-cid" help:"Vsock CID to listen on, or any (QEMU's vhost-vsock)." default:"any"`
	SocketPath   socketPaths `help:"Hybrid vsock (Firecracker, Cloud Hypervisor, Dragonball, OpenVMM): the VMM's own socket, an absolute path, e.g. /run/vc/firecracker/ID/root/kata.hvsock or /run/vc/vm/ID/clh.sock; the forwarder listens on PATH_PORT (--vsock-port), at once. A glob in its directories (/run/vc/vm/*/clh.sock) serves every VM as it starts: PATH_PORT is made in a VM's directory once the VMM's socket is there, and closed when it goes. Repeatable or comma-separated." placeholder:"PATH"`
	OtlpEndpoint string      `help:"OTLP/gRPC endpoint the spans go to, as Kata's: http://HOST:PORT in the clear (https:// with TLS), or otlp://, otlps://, otlphttp://, otlphttps:// as --to takes them. OTLP/HTTP (port 4318) is --to otlphttp://HOST:4318, or this with $OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf (/v1/traces appended). Not given: OpenTelemetry's environment (see --to), then this default." default:"http://localhost:4317"`
	JaegerHost   string      `help:"Older Kata forwarders' destination (up to 3.31): send to a Jaeger agent's UDP port instead of OTLP; given alone, port 6831, as Kata's default was." placeholder:"HOST"`
	JaegerPort   uint16      `help:"The Jaeger agent's UDP port; given alone, on host 127.0.0.1, as Kata's default was." placeholder:"PORT"`
	DumpOnly     yesNo       `help:"Forward nothing: write each span to stdout as a JSON line. Takes a value too (--dump-only=true, --dump-only false), as Kata 3.19+'s does; Kata read any value as true, here false means false."`
	TraceName    string      `help:"Service name of spans whose resource names none (the agent names none: its SDK says unknown_service). Not given: $OTEL_SERVICE_NAME, or service.name in $OTEL_RESOURCE_ATTRIBUTES." default:"kata-agent"`

	// katatrace's own.
	From         []endpoint.Addr `help:"Where agents connect, replacing what the vsock and socket-path flags say; repeatable or comma-separated: vsock://any:10240, unix:///path (the VMM's socket plus _PORT; a glob in the directories finds VMs as they start, as with --socket-path), tcp://HOST:PORT or fd://N." placeholder:"ADDR" addr:"listen vsock unix tcp fd" addrport:"10240"`
	To           sink.Target     `help:"Where spans go, instead of --otlp-endpoint: otlp://HOST:4317 (OTLP/gRPC; otlps:// with TLS), otlphttp://HOST:4318 (OTLP/HTTP; otlphttps://), udp://HOST:6831 (a Jaeger agent), http://HOST:14268/api/traces (http:// here is a Jaeger collector, never OTLP), print (trees) or jsonl (a JSON object per span) on stdout.${otel_help}" placeholder:"SINK"`
	MaxSpanBytes ByteSize        `help:"Largest span payload taken (an agent's span is a few KiB); a frame announcing more is read through and thrown away, counted, and the agent's connection kept." default:"4MiB"`
	traceSinkFlags
	hostRelay

	dest sink.Target // where spans go, as Validate found it
}

func (c *traceForwarder) Validate(kctx *kong.Context) error {
	notOTLP := bool(c.DumpOnly) || c.jaeger(kctx) || given(kctx, "to") && c.To.Kind != sink.KindOTLP
	env, err := readOTEL(!notOTLP)
	if err != nil {
		return err
	}
	if !given(kctx, "trace-name") && env.ServiceName != "" {
		c.TraceName = env.ServiceName
	}
	if strings.TrimSpace(c.TraceName) == "" {
		return flagErr("trace-name", fmt.Errorf("the trace name must not be blank"))
	}
	if c.VsockPort == 0 {
		return flagErr("vsock-port", fmt.Errorf("the port must not be 0"))
	}
	if c.VsockCID != "any" {
		if _, err := strconv.ParseUint(c.VsockCID, 10, 32); err != nil {
			return flagErr("vsock-cid", fmt.Errorf("%q is not a CID: a number, or any", c.VsockCID))
		}
	}
	if len(c.From) > 0 && len(c.SocketPath) > 0 {
		return flagErr("from", fmt.Errorf("give --from or --socket-path, not both"))
	}
	if err := c.oneDestination(kctx); err != nil {
		return err
	}
	if given(kctx, "jaeger-host") && strings.TrimSpace(c.JaegerHost) == "" {
		return flagErr("jaeger-host", fmt.Errorf("empty: give a host, e.g. 127.0.0.1 (Kata's default)"))
	}
	if given(kctx, "jaeger-port") && c.JaegerPort == 0 {
		return flagErr("jaeger-port", fmt.Errorf("the port must not be 0 (Kata's default was 6831)"))
	}
	from, err := c.froms()
	if err != nil {
		return err
	}
	if err := checkFrom(from, c.VsockPort); err != nil {
		var fe *flagError
		if errors.As(err, &fe) && len(c.SocketPath) > 0 {
			fe.flag = "socket-path" // the addresses are its
			var ae *endpoint.AddrError
			if errors.As(err, &ae) {
				ae.Example = "--socket-path /run/vc/vm/*/clh.sock" // the flag takes a path
			}
		}
		return err
	}
	to, err := c.target(kctx, env)
	if err != nil {
		return err
	}
	c.dest = to
	if to.Kind == sink.KindDatagram {
		if err := to.Addr.Require("spans are sent to", endpoint.SchemeUDP, endpoint.SchemeUnixgram); err != nil {
			return flagErr("to", err)
		}
	}
	if err := c.otlpOptions.validate(kctx, to, env); err != nil {
		return err
	}
	if err := c.validateCollector(kctx, to); err != nil {
		return err
	}
	if c.MaxSpanBytes < 1<<10 || c.MaxSpanBytes > 1<<30 {
		return flagErr("max-span-bytes", fmt.Errorf("%s: give 1KiB to 1GiB", c.MaxSpanBytes))
	}
	if need := hold.Size(kataspan.HeaderSize + int(c.MaxSpanBytes)); int(c.MaxHeldBytesPerGuest) < need {
		return flagErr("max-held-bytes-per-guest", fmt.Errorf("%s cannot hold one frame of --max-span-bytes %s: give at least %s", c.MaxHeldBytesPerGuest, c.MaxSpanBytes, ByteSize(need)))
	}
	if c.QueueBytes < c.MaxSpanBytes {
		return flagErr("queue-bytes", fmt.Errorf("%s is smaller than --max-span-bytes (%s)", c.QueueBytes, c.MaxSpanBytes))
	}
	return c.limits()
}

// froms is where agents connect: --from, else Kata's flags.
func (c *traceForwarder) froms() ([]endpoint.Addr, error) {
	if len(c.From) > 0 {
		return c.From, nil
	}
	if len(c.SocketPath) == 0 {
		a, err := endpoint.ParseAddr(fmt.Sprintf("vsock://%s:%d", c.VsockCID, c.VsockPort))
		if err != nil {
			return nil, flagErr("vsock-cid", err)
		}
		return []endpoint.Addr{a}, nil
	}
	var from []endpoint.Addr
	for _, p := range c.SocketPath {
		a, err := socketPathAddr(p, c.VsockPort)
		if err != nil {
			return nil, flagErr("socket-path", err)
		}
		from = append(from, a)
	}
	return from, nil
}

// socketPaths is --socket-path: repeatable and comma-separated, as
// --from; an empty value is kept, to be refused, where kong's slices drop
// it (and the forwarder would listen on vsock, not where it was told).
type socketPaths []string

func (s *socketPaths) Decode(ctx *kong.DecodeContext) error {
	var v string
	if err := ctx.Scan.PopValueInto("path", &v); err != nil {
		return err
	}
	if v == "" {
		*s = append(*s, "")
		return nil
	}
	*s = append(*s, kong.SplitEscaped(v, ',')...)
	return nil
}

// socketPathAddr is where agents connect for a --socket-path: the VMM's
// socket, PATH_PORT beside it. What is no VMM's socket is refused with
// the flag as it should have been, since it would otherwise listen
// somewhere no agent connects (Kata's forwarder refuses only an empty
// one, and binds a relative one beside its working directory).
func socketPathAddr(p string, port uint32) (endpoint.Addr, error) {
	example := func(path string) string {
		return fmt.Sprintf("--socket-path %s (the forwarder listens on %s_%d)", path, path, port)
	}
	if scheme, rest, ok := strings.Cut(p, "://"); ok {
		if scheme != endpoint.SchemeUnix {
			return endpoint.Addr{}, fmt.Errorf("%q: a path, not an address (addresses go to --from)", p)
		}
		return endpoint.Addr{}, fmt.Errorf("%q: give the path: %s", p, example("/"+strings.TrimPrefix(rest, "/")))
	}
	if rest, ok := strings.CutPrefix(p, "unix:"); ok {
		return endpoint.Addr{}, fmt.Errorf("%q: give the path: %s", p, example("/"+strings.TrimPrefix(rest, "/")))
	}
	switch {
	case strings.TrimSpace(p) == "":
		return endpoint.Addr{}, fmt.Errorf("empty: give the VMM's socket, e.g. %s, or leave the flag out to listen on vsock port %d", example("/run/vc/vm/ID/clh.sock"), port)
	case !filepath.IsAbs(p):
		abs, err := filepath.Abs(p)
		if err != nil {
			abs = "/" + p
		}
		return endpoint.Addr{}, fmt.Errorf("%q is relative: give an absolute path, e.g. %s", p, example(abs))
	}
	if vmm := endpoint.VMMSocket(p); vmm != "" {
		return endpoint.Addr{}, fmt.Errorf("%q ends in _PORT already, and the forwarder appends _%d (--vsock-port) to it: give the VMM's own socket, %s", p, port, example(vmm))
	}
	if strings.ContainsAny(filepath.Base(p), "*?[") {
		return endpoint.Addr{}, fmt.Errorf("%q: a glob may stand in the directories, not in the socket's name: give the VMM's socket by name, e.g. %s", p, example(filepath.Join(filepath.Dir(p), likelyVMMSocket(p))))
	}
	return endpoint.ParseAddr(fmt.Sprintf("unix://%s_%d", p, port))
}

// likelyVMMSocket is the name of the VMM's socket a path in Kata's trees
// most likely meant: Firecracker's and Dragonball's are in a root/
// directory, runtime-rs's Cloud Hypervisor's under /run/kata.
func likelyVMMSocket(p string) string {
	switch {
	case filepath.Base(filepath.Dir(p)) == "root":
		return "kata.hvsock"
	case strings.Contains(p, "/run/kata/"):
		return "ch-vm.sock"
	}
	return "clh.sock"
}

// jaeger reports whether a Jaeger agent is the destination: either flag
// given (the flag, or its KATATRACE_* twin).
func (c *traceForwarder) jaeger(kctx *kong.Context) bool {
	return given(kctx, "jaeger-host") || given(kctx, "jaeger-port")
}

// oneDestination refuses destinations given together (a default is not
// given): one of them would be dropped without a word.
func (c *traceForwarder) oneDestination(kctx *kong.Context) error {
	var dests []string
	for _, f := range []string{"to", "otlp-endpoint", "dump-only", "jaeger-host", "jaeger-port"} {
		if as, ok := givenAs(kctx, f); ok && (f != "dump-only" || bool(c.DumpOnly)) && (f != "jaeger-port" || !given(kctx, "jaeger-host")) {
			dests = append(dests, as)
		}
	}
	if len(dests) > 1 {
		return fmt.Errorf("give one destination, not %s: --to, --otlp-endpoint, --dump-only, or --jaeger-host with --jaeger-port", strings.Join(dests, " and "))
	}
	return nil
}

// target is where spans go: --to, --dump-only, --jaeger-host or
// --otlp-endpoint, given; else OpenTelemetry's environment (env); else
// --otlp-endpoint's default.
func (c *traceForwarder) target(kctx *kong.Context, env sink.OTELEnv) (sink.Target, error) {
	var s, flag string
	switch {
	case c.To.String() != "":
		return c.To, nil
	case bool(c.DumpOnly):
		s, flag = "jsonl", "dump-only"
	case c.jaeger(kctx):
		// Either alone: the other as Kata's default was.
		host, port := cmp.Or(c.JaegerHost, "127.0.0.1"), cmp.Or(c.JaegerPort, 6831)
		s, flag = "udp://"+net.JoinHostPort(host, strconv.Itoa(int(port))), "jaeger-host"
	case !given(kctx, "otlp-endpoint") && env.Endpoint != "":
		t, _, err := envTarget(env)
		return t, err
	case !given(kctx, "otlp-endpoint") && env.Protocol == sink.ProtoHTTP:
		s, flag = "otlphttp://localhost:4318/v1/traces", "otlp-endpoint" // the SDKs' default
	default:
		t, err := otlpEndpoint(c.OtlpEndpoint, env)
		if err != nil {
			return sink.Target{}, flagErr("otlp-endpoint", err)
		}
		return t, nil
	}
	var t sink.Target
	if err := t.UnmarshalText([]byte(s)); err != nil {
		return sink.Target{}, flagErr(flag, err)
	}
	return t, nil
}

// otlpEndpoint reads --otlp-endpoint: Kata's form, an http:// or https://
// URL spoken to as $OTEL_EXPORTER_OTLP_PROTOCOL says (OTLP/gRPC unless
// it says http/protobuf), or --to's otlp… schemes.
func otlpEndpoint(s string, env sink.OTELEnv) (sink.Target, error) {
	if strings.HasPrefix(s, "otlp") {
		var t sink.Target
		return t, t.UnmarshalText([]byte(s))
	}
	if !strings.Contains(s, "://") {
		return sink.Target{}, fmt.Errorf("%q is not an OTLP endpoint: want a URL, http://HOST:PORT (OTLP/gRPC in the clear, as Kata's; https:// with TLS), "+
			"e.g. http://127.0.0.1:4317; or otlp://HOST:4317, otlphttp://HOST:4318 as --to takes them", s)
	}
	// A URL already ending in /v1/traces is no base to append it to.
	base := !strings.HasSuffix(strings.TrimSuffix(s, "/"), "/v1/traces")
	return sink.OTLPTargetFromURL(s, cmp.Or(env.Protocol, sink.ProtoGRPC), env.Protocol == "", base, false)
}

func (c *traceForwarder) Run(rc *RunContext) error {
	from, _ := c.froms() // checked by Validate
	to := c.dest
	out, err := c.open(rc, to)
	if err != nil {
		return err
	}
	max := int(c.MaxSpanBytes)
	cfg := hostrelay.ServerConfig{
		Kind: wire.KindKataSpans,
		Sink: kataspan.NewSink(out, c.TraceName),
		Messages: func(r io.Reader, mem hostrelay.Memory) hostrelay.MessageReader {
			sr := kataspan.NewReader(r, max)
			sr.SetMemory(mem)
			return spanReader{sr}
		},
		Logger: rc.Log,
	}
	return c.serve(rc, from, cfg, to.String())
}

// spanReader is a Kata agent's span stream as the host relay reads
// messages: kataspan.Reader, its counts in the host relay's type.
type spanReader struct{ *kataspan.Reader }

func (r spanReader) Skipped() hostrelay.Skipped {
	s := r.Reader.Skipped()
	return hostrelay.Skipped{Oversize: s.Oversize, Stalled: s.Stalled, Resyncs: s.Resyncs, Bytes: s.Bytes}
}
