package main

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/katatrace/katatrace/internal/jaegerv2"
	"github.com/opentracing/opentracing-go"
	jaeger "github.com/uber/jaeger-client-go"
)

// runKata3 measures, in one run against one real Jaeger v2: spans/s one
// Kata 3.x guest pushes through kata-trace-forwarder into Jaeger's OTLP
// receiver, and the relays' CPU per 100,000 spans; beside it the Kata 1.x
// path (jaeger-client-go → guest relay → host relay → Jaeger's UDP port)
// with the same number of spans; then the forwarder's memory with 1,000
// guests connected.
func runKata3(bin, jaegerBin string, spans int, sinkFlags []string) error {
	dir, err := os.MkdirTemp("", "ktk3")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	ports := jaegerv2.Ports{}
	for _, p := range []*int{&ports.HTTP, &ports.Query, &ports.QueryGRPC, &ports.OTLPGRPC, &ports.OTLPHTTP} {
		*p = freeTCP()
	}
	udp, err := freeUDP()
	if err != nil {
		return err
	}
	ports.UDP = atoi(portOf(udp))
	cfg := filepath.Join(dir, "jaeger.yaml")
	if err := os.WriteFile(cfg, []byte(jaegerv2.Config(ports)), 0o644); err != nil {
		return err
	}
	j := exec.Command(jaegerBin, "--config", cfg)
	j.Env = append(os.Environ(), jaegerv2.Env...)
	if err := j.Start(); err != nil {
		return fmt.Errorf("jaeger: %w", err)
	}
	defer func() { _ = j.Process.Kill(); _ = j.Wait() }()
	if err := waitHTTP(fmt.Sprintf("http://127.0.0.1:%d/api/services", ports.Query), 60*time.Second); err != nil {
		return err
	}
	stream, bin3 := kata3Stream(spans), kata3Bincode(spans)
	fmt.Printf("%d spans: Kata 3.x frames %d bytes (JSON, %d B a span), Kata 2.x frames %d bytes (bincode, %d B a span)\n\n",
		spans, len(stream), len(stream)/spans, len(bin3), len(bin3)/spans)
	null, err := startNullOTLP()
	if err != nil {
		return err
	}
	defer null.srv.Stop()
	jaegerOTLP := fmt.Sprintf("otlp://127.0.0.1:%d", ports.OTLPGRPC)
	var rows []row
	for _, r := range []struct {
		name, to string
		stream   []byte
	}{
		{"kata-trace-forwarder, JSON → Jaeger (OTLP/gRPC)", jaegerOTLP, stream},
		{"kata-trace-forwarder, bincode → Jaeger (OTLP/gRPC)", jaegerOTLP, bin3},
		{"kata-trace-forwarder, JSON → null OTLP", "otlp://" + null.addr, stream},
		{"kata-trace-forwarder, bincode → null OTLP", "otlp://" + null.addr, bin3},
	} {
		rw, err := forwarderRun(bin, dir, r.name, r.to, r.stream, spans)
		if err != nil {
			return fmt.Errorf("%s: %w", r.name, err)
		}
		rows = append(rows, rw)
	}

	// Kata 1.x: jaeger-client-go → guest relay → host relay → Jaeger UDP.
	hsock := filepath.Join(dir, "kata.hvsock_6831")
	hm, gm := freeTCP(), freeTCP()
	host := exec.Command(bin, "vsock-to-udp-server", "--from", "unix://"+hsock, "--to", "udp://"+udp, "--log-level=warn", "--drain-timeout", "5m",
		"--metrics-listen", fmt.Sprintf("tcp://127.0.0.1:%d", hm))
	host.Stderr = os.Stderr
	if err := host.Start(); err != nil {
		return err
	}
	waitFile(hsock)
	gudp, err := freeUDP()
	if err != nil {
		return err
	}
	guest := exec.Command(bin, "jaeger-client-socat-redirector", "--from", "udp://"+gudp, "--to", "unix://"+hsock, "--log-level=warn", "--queue-bytes", "256MiB",
		"--metrics-listen", fmt.Sprintf("tcp://127.0.0.1:%d", gm))
	guest.Stderr = os.Stderr
	if err := guest.Start(); err != nil {
		return err
	}
	// The relays' allocations, as the forwarder's: both processes', from
	// before the first span to when the last is handed on.
	mallocs := func() float64 {
		return scrape(fmt.Sprintf("http://127.0.0.1:%d/metrics", hm), "go_memstats_mallocs_total") +
			scrape(fmt.Sprintf("http://127.0.0.1:%d/metrics", gm), "go_memstats_mallocs_total")
	}
	if err := waitHTTP(fmt.Sprintf("http://127.0.0.1:%d/metrics", gm), 10*time.Second); err != nil {
		return err
	}
	time.Sleep(300 * time.Millisecond) // the guest relay binds its port
	m0 := mallocs()
	tr, err := jaeger.NewUDPTransport(gudp, 0)
	if err != nil {
		return err
	}
	tracer, closer := jaeger.NewTracer("kata-agent", jaeger.NewConstSampler(true),
		jaeger.NewRemoteReporter(tr, jaeger.ReporterOptions.QueueSize(spans+1), jaeger.ReporterOptions.BufferFlushInterval(10*time.Millisecond)))
	start := time.Now()
	root := tracer.StartSpan("root-span")
	for i := range spans - 1 {
		sp := tracer.StartSpan("child", opentracing.ChildOf(root.Context()))
		sp.SetTag("index", i)
		sp.SetTag("mod", "rpc.rs")
		sp.LogKV("event", "rpc call from shim to agent", "level", "INFO")
		sp.Finish()
	}
	root.Finish()
	_ = closer.Close()
	time.Sleep(200 * time.Millisecond) // the last datagrams relayed
	relayAllocs := (mallocs() - m0) / float64(spans)
	gTook, gCPU, gRSS := stopAndMeasure(guest, start)
	hTook, hCPU, hRSS := stopAndMeasure(host, start)
	relays := row{name: "Kata 1.x: guest relay → host relay → Jaeger UDP", spansPerSec: float64(spans) / max(gTook, hTook).Seconds(),
		cpu: (gCPU + hCPU).Seconds() * 1e5 / float64(spans), allocs: relayAllocs, rssMiB: float64(gRSS+hRSS) / 1024,
		rssNote: fmt.Sprintf(" (%.1f + %.1f)", float64(gRSS)/1024, float64(hRSS)/1024)}
	rows = append(rows, relays)
	tw := newTable()
	fmt.Fprintln(tw, "path\tspans/s\t× 1.x\tCPU s per 100k spans\t× 1.x\tallocs/span\t× 1.x\tpeak RSS (MiB)\t× 1.x\t")
	for _, r := range rows {
		allocs, ratio := "-", "-"
		if r.allocs >= 0 {
			allocs = fmt.Sprintf("%.2f", r.allocs)
			if relays.allocs > 0 {
				ratio = fmt.Sprintf("%.0f", r.allocs/relays.allocs)
			}
		}
		fmt.Fprintf(tw, "%s\t%.0f\t%.2f\t%.2f\t%.1f\t%s\t%s\t%.1f%s\t%.2f\t\n", r.name, r.spansPerSec, r.spansPerSec/relays.spansPerSec,
			r.cpu, r.cpu/relays.cpu, allocs, ratio, r.rssMiB, r.rssNote, r.rssMiB/relays.rssMiB)
	}
	_ = tw.Flush()
	fmt.Printf("null OTLP endpoint: %d spans received (%d sent to it)\n", null.spans.Load(), 2*spans)

	if err := kata3Sinks(bin, dir, ports, sinkFlags); err != nil {
		return err
	}

	return kata3Guests(bin, dir, ports.OTLPGRPC)
}

// kata3Guests: the forwarder's memory with 1,000 guests connected, each
// having sent one span.
func kata3Guests(bin, dir string, otlp int) error {
	const guests = 1000
	sock := filepath.Join(dir, "many.sock_10240")
	fw := exec.Command(bin, "kata-trace-forwarder", "--from", "unix://"+sock, "--to", fmt.Sprintf("otlp://127.0.0.1:%d", otlp),
		"--log-level=warn", "--max-connections-per-guest", "100000")
	fw.Stderr = os.Stderr
	if err := fw.Start(); err != nil {
		return err
	}
	waitFile(sock)
	idle := vmRSS(fw.Process.Pid)
	one := kata3Stream(1)
	var conns []net.Conn
	for range guests {
		c, err := net.Dial("unix", sock)
		if err != nil {
			return err
		}
		if _, err := c.Write(one); err != nil {
			return err
		}
		conns = append(conns, c)
	}
	time.Sleep(2 * time.Second)
	held := vmRSS(fw.Process.Pid)
	for _, c := range conns {
		_ = c.Close()
	}
	_, _, peak := stopAndMeasure(fw, time.Now())
	fmt.Printf("\nkata-trace-forwarder, %d guests connected: RSS %.1f MiB (idle %.1f MiB, peak %.1f MiB): %.1f KiB a guest\n",
		guests, float64(held)/1024, float64(idle)/1024, float64(peak)/1024, float64(held-idle)/guests)
	return nil
}

// stopAndMeasure waits until the process has handed everything on
// (SIGTERM: it drains, then closes its sink, which flushes), and returns
// the time since start, its CPU and its peak RSS in KiB (VmHWM, read
// while its drain runs).
func stopAndMeasure(cmd *exec.Cmd, start time.Time) (time.Duration, time.Duration, int) {
	time.Sleep(200 * time.Millisecond) // the last bytes read
	_ = cmd.Process.Signal(syscall.SIGTERM)
	done, peak := make(chan struct{}), make(chan int)
	go func() {
		rss := peakRSS(cmd.Process.Pid)
		t := time.NewTicker(20 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-done:
				peak <- rss
				return
			case <-t.C:
				rss = max(rss, peakRSS(cmd.Process.Pid))
			}
		}
	}()
	_ = cmd.Wait()
	close(done)
	rss := <-peak
	took := time.Since(start)
	ru := cmd.ProcessState.SysUsage().(*syscall.Rusage)
	cpu := time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	return took, cpu, rss
}

// kata3Stream is n spans as a Kata 3.29+ agent writes them: frames of
// serde_json SpanData (opentelemetry 0.17), one trace, children first.
func kata3Stream(n int) []byte {
	return kata3StreamTrace(n, fmt.Sprintf("%d%018d", 1+rand.IntN(9), rand.Uint64()%1e18))
}

// kata3StreamTrace is kata3Stream of one trace, its id in decimal.
func kata3StreamTrace(n int, trace string) []byte {
	var b bytes.Buffer
	now := time.Now()
	for i := range n {
		id, parent := uint64(i)+2, uint64(1) // the root, 1, comes last
		if i == n-1 {
			id, parent = 1, 0
		}
		p := fmt.Appendf(nil, `{"span_context":{"trace_id":%s,"span_id":%d,"trace_flags":1,"is_remote":false,"trace_state":null},`+
			`"parent_span_id":%d,"span_kind":"Server","name":"child-span","start_time":{"secs_since_epoch":%d,"nanos_since_epoch":%d},`+
			`"end_time":{"secs_since_epoch":%d,"nanos_since_epoch":%d},"attributes":{"map":{"mod":{"String":"rpc.rs"},"index":{"I64":%d},`+
			`"ints":{"Array":{"I64":[1,2,0]}},"ok":{"Bool":true}},"evict_list":["ints","ok","index","mod"],"max_len":128,"dropped_count":0},`+
			`"events":{"queue":[{"name":"rpc call from shim to agent","timestamp":{"secs_since_epoch":%d,"nanos_since_epoch":0},`+
			`"attributes":[{"key":"level","value":{"String":"INFO"}}],"dropped_attributes_count":0}],"max_len":128,"dropped_count":0},`+
			`"links":{"queue":null,"max_len":128,"dropped_count":0},"status_code":"Unset","status_message":"",`+
			`"resource":{"attrs":{"service.name":{"String":"unknown_service"}}}}`,
			trace, id, parent, now.Unix(), now.Nanosecond(), now.Unix(), now.Nanosecond(), i, now.Unix())
		_ = binary.Write(&b, binary.BigEndian, uint64(len(p)))
		b.Write(p)
	}
	return b.Bytes()
}

func newTable() *tabwriter.Writer { return tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0) }

func freeTCP() int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fatalf("free port: %v", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func atoi(s string) int {
	var n int
	_, _ = fmt.Sscan(s, &n)
	return n
}

func waitHTTP(url string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if resp, err := http.Get(url); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return nil
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("%s did not answer in %v", url, timeout)
}

// vmRSS is a process's resident set now, in KiB.
func vmRSS(pid int) int {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	for _, l := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			return atoi(strings.Fields(rest)[0])
		}
	}
	return 0
}
