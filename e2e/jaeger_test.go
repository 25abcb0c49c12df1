package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/katatrace/katatrace/internal/jaegerv2"
	"github.com/katatrace/katatrace/internal/testutil"
	"github.com/opentracing/opentracing-go"
	"github.com/uber/jaeger-client-go/config"
)

// binaries returns the katatrace and jaeger binaries. Outside make e2e they
// may be missing: the tests then skip, unless KATATRACE_E2E=1 says they must
// run (as make e2e does), in which case that is a failure.
func binaries(t *testing.T) (katatrace, jaeger string) {
	katatrace, jaeger = os.Getenv("KATATRACE_BIN"), os.Getenv("JAEGER_BIN")
	for _, p := range []string{katatrace, jaeger} {
		if _, err := os.Stat(p); p == "" || err != nil {
			if os.Getenv("KATATRACE_E2E") == "1" {
				t.Fatalf("KATATRACE_BIN=%q and JAEGER_BIN=%q must name built binaries", katatrace, jaeger)
			}
			t.Skip("end-to-end tests need built binaries: run make e2e (KATATRACE_BIN, JAEGER_BIN)")
		}
	}
	return katatrace, jaeger
}

// Jaeger is a Jaeger v2 all-in-one with in-memory storage, bound to
// 127.0.0.1 only.
type Jaeger struct {
	UDP, HTTP, Query   int
	OTLPGRPC, OTLPHTTP int
}

func (j *Jaeger) UDPAddr() string      { return fmt.Sprintf("udp://127.0.0.1:%d", j.UDP) }
func (j *Jaeger) CollectorURL() string { return fmt.Sprintf("http://127.0.0.1:%d/api/traces", j.HTTP) }
func (j *Jaeger) OTLPGRPCAddr() string { return fmt.Sprintf("otlp://127.0.0.1:%d", j.OTLPGRPC) }
func (j *Jaeger) OTLPHTTPAddr() string { return fmt.Sprintf("otlphttp://127.0.0.1:%d", j.OTLPHTTP) }

// startJaeger runs a Jaeger for one test.
func startJaeger(t *testing.T) *Jaeger {
	_, bin := binaries(t)
	j := &Jaeger{UDP: testutil.FreePort(t, "udp"), HTTP: testutil.FreePort(t, "tcp"), Query: testutil.FreePort(t, "tcp"),
		OTLPGRPC: testutil.FreePort(t, "tcp"), OTLPHTTP: testutil.FreePort(t, "tcp")}
	cfg := filepath.Join(t.TempDir(), "jaeger.yaml")
	if err := os.WriteFile(cfg, []byte(jaegerv2.Config(jaegerv2.Ports{UDP: j.UDP, HTTP: j.HTTP, Query: j.Query, QueryGRPC: testutil.FreePort(t, "tcp"), OTLPGRPC: j.OTLPGRPC, OTLPHTTP: j.OTLPHTTP})), 0o644); err != nil {
		t.Fatal(err)
	}
	// Jaeger's own tracing would try to export to localhost:4317: off.
	p := testutil.Start(t, jaegerv2.Env, bin, "--config", cfg)
	testutil.Eventually(t, 60*time.Second, "Jaeger to serve queries and take HTTP batches", func() bool {
		select {
		case <-p.Done():
			t.Fatalf("jaeger exited:\n%s", p.Stderr.String())
		default:
		}
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/api/services", j.Query))
		if err != nil {
			return false
		}
		resp.Body.Close()
		for _, port := range []int{j.HTTP, j.OTLPGRPC, j.OTLPHTTP} {
			c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
			if err != nil {
				return false
			}
			c.Close()
		}
		return resp.StatusCode == 200
	})
	return j
}

// Span is a span as Jaeger's query API returns it.
type Span struct {
	TraceID       string `json:"traceID"`
	SpanID        string `json:"spanID"`
	OperationName string `json:"operationName"`
	References    []struct {
		RefType string `json:"refType"`
		SpanID  string `json:"spanID"`
	} `json:"references"`
	Tags []KV `json:"tags"`
	Logs []struct {
		Fields []KV `json:"fields"`
	} `json:"logs"`
	ProcessID string `json:"processID"`
	// Process is filled in from the trace's processes.
	Process Process `json:"-"`
}

// Process is the service that sent a span, and its tags (OTLP: the
// resource's attributes).
type Process struct {
	ServiceName string `json:"serviceName"`
	Tags        []KV   `json:"tags"`
}

// Tag returns the value of the process's tag k.
func (p Process) Tag(k string) any {
	for _, kv := range p.Tags {
		if kv.Key == k {
			return kv.Value
		}
	}
	return nil
}

// KV is a tag or log field.
type KV struct {
	Key   string `json:"key"`
	Value any    `json:"value"`
}

// Parent is the span's CHILD_OF parent, or "".
func (s Span) Parent() string {
	for _, r := range s.References {
		if r.RefType == "CHILD_OF" {
			return r.SpanID
		}
	}
	return ""
}

// Tag returns the value of tag k.
func (s Span) Tag(k string) any {
	for _, kv := range s.Tags {
		if kv.Key == k {
			return kv.Value
		}
	}
	return nil
}

// traces GETs a query API path and returns the spans of each trace in the
// answer; a trace not (yet) there is no trace.
func (j *Jaeger) traces(t *testing.T, path string) [][]Span {
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d%s", j.Query, path))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode == http.StatusNotFound {
		return nil
	}
	var out struct {
		Data []struct {
			Spans     []Span             `json:"spans"`
			Processes map[string]Process `json:"processes"`
		} `json:"data"`
	}
	if err := json.Unmarshal(body, &out); err != nil {
		t.Fatalf("query %s: %v: %.200s", path, err, body)
	}
	var traces [][]Span
	for _, d := range out.Data {
		for i := range d.Spans {
			d.Spans[i].Process = d.Processes[d.Spans[i].ProcessID]
		}
		traces = append(traces, d.Spans)
	}
	return traces
}

// Trace fetches a trace's spans from the query API.
func (j *Jaeger) Trace(t *testing.T, traceID string) []Span {
	if tr := j.traces(t, "/api/traces/"+traceID); len(tr) > 0 {
		return tr[0]
	}
	return nil
}

// tracesOf returns every span of every trace Jaeger has for service.
func (j *Jaeger) tracesOf(t *testing.T, service string) []Span {
	var spans []Span
	for _, tr := range j.traces(t, "/api/traces?limit=100&service="+service) {
		spans = append(spans, tr...)
	}
	return spans
}

// WaitTrace waits until the trace has want spans (or stays short for long
// enough to say it never will) and returns them.
func (j *Jaeger) WaitTrace(t *testing.T, traceID string, want int, timeout time.Duration) []Span {
	deadline := time.Now().Add(timeout)
	var spans []Span
	last, lastChange := -1, time.Now()
	for time.Now().Before(deadline) {
		spans = j.Trace(t, traceID)
		if len(spans) >= want {
			return spans
		}
		if len(spans) != last {
			last, lastChange = len(spans), time.Now()
		} else if len(spans) > 0 && time.Since(lastChange) > 5*time.Second {
			return spans // stopped growing
		}
		time.Sleep(100 * time.Millisecond)
	}
	return spans
}

// Path is a guest relay → unix socket → host relay pipeline; Agent is the
// address Jaeger clients send to.
type Path struct {
	Agent       string
	Guest, Host *testutil.Proc
}

// startKatatrace starts both relays, the host one sending to to.
func startKatatrace(t *testing.T, to string, hostArgs ...string) *Path {
	bin, _ := binaries(t)
	sock := filepath.Join(testutil.SockDir(t), "kata.hvsock_6831")
	host := testutil.Start(t, nil, bin, append([]string{"vsock-to-udp-server", "--from", "unix://" + sock, "--to", to}, hostArgs...)...)
	host.WaitLog("listening")
	port := testutil.FreePort(t, "udp")
	guest := testutil.Start(t, nil, bin, "jaeger-client-socat-redirector", "--from", fmt.Sprintf("udp://127.0.0.1:%d", port), "--to", "unix://"+sock)
	guest.WaitLog("connected to host")
	return &Path{Agent: fmt.Sprintf("127.0.0.1:%d", port), Guest: guest, Host: host}
}

// Stop drains the guest relay (SIGTERM: every datagram confirmed by the
// host) and then the host relay.
func (p *Path) Stop(t *testing.T) {
	for _, pr := range []*testutil.Proc{p.Guest, p.Host} {
		pr.Signal(syscall.SIGTERM)
		if code := pr.Wait(30 * time.Second); code != 0 {
			t.Fatalf("relay exit %d", code)
		}
	}
}

// socatPair is the pipeline Kata used before: socat in the guest, socat on
// the host.
func socatPair(t *testing.T, jaegerUDP int) string {
	socat, err := exec.LookPath("socat")
	if err != nil {
		t.Skip("socat is not installed (apt-get install socat; .ci/run installs it)")
	}
	sock := filepath.Join(testutil.SockDir(t), "socat.sock")
	testutil.Start(t, nil, socat, "-u", "UNIX-LISTEN:"+sock+",fork", fmt.Sprintf("UDP-SENDTO:127.0.0.1:%d", jaegerUDP))
	testutil.Eventually(t, 5*time.Second, "socat host side", func() bool { _, err := os.Stat(sock); return err == nil })
	port := testutil.FreePort(t, "udp")
	testutil.Start(t, nil, socat, "-u", fmt.Sprintf("UDP-RECV:%d,bind=127.0.0.1", port), "UNIX-CONNECT:"+sock)
	testutil.WaitUDPBound(t, port)
	return fmt.Sprintf("127.0.0.1:%d", port)
}

// tracer is a real jaeger-client-go tracer, configured the way an agent
// configures one, reporting to agent.
func tracer(t *testing.T, service, agent string) (opentracing.Tracer, io.Closer) {
	cfg := config.Configuration{
		ServiceName: service,
		Sampler:     &config.SamplerConfig{Type: "const", Param: 1},
		Reporter: &config.ReporterConfig{
			LocalAgentHostPort:  agent,
			QueueSize:           200000,
			BufferFlushInterval: 100 * time.Millisecond,
		},
	}
	tr, closer, err := cfg.NewTracer(config.MaxTagValueLength(65000))
	if err != nil {
		t.Fatal(err)
	}
	return tr, closer
}

func traceID(s opentracing.Span) string {
	return strings.SplitN(fmt.Sprint(s.Context()), ":", 2)[0]
}
