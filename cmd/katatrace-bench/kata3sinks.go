package main

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/katatrace/katatrace/internal/jaegerv2"
	"github.com/katatrace/katatrace/tracing"
	"github.com/katatrace/katatrace/wire"
	"github.com/opentracing/opentracing-go"
	jaeger "github.com/uber/jaeger-client-go"
)

// Sinks against a distant collector: guests each send one batch of
// spansPerBatch spans every second for rounds seconds.
const (
	sinkGuests    = 100
	sinkRounds    = 10
	spansPerBatch = 10
	oneWay        = 25 * time.Millisecond // the proxy's delay each way: 50 ms a round trip
)

// kata3Sinks runs the collector sinks against Jaeger 50 ms away (a
// delaying proxy in front of it): the Jaeger collector sink of
// vsock-to-udp-server (Kata 1.x guests' batches) and the OTLP sink of
// kata-trace-forwarder (Kata 3.x agents' frames); it says how many spans
// were sent and stored, and how the sink's queue went.
func kata3Sinks(bin, dir string, ports jaegerv2.Ports, flags []string) error {
	fmt.Printf("\nSinks against a collector 50 ms away: a TCP proxy in this process delays every chunk of bytes, each way, by %v, in front of Jaeger;\n"+
		"%d guests each send one batch of %d spans every second for %d s (more flags: %q)\n", oneWay, sinkGuests, spansPerBatch, sinkRounds, flags)
	tw := newTable()
	fmt.Fprintln(tw, "sink\tspans sent\tspans stored\tqueue each second (batches)\tqueue at the end\tgrew\t")
	for _, run := range []func(string, string, jaegerv2.Ports, []string) (sinkResult, error){jaegerCollectorSink, forwarderOTLPSink} {
		r, err := run(bin, dir, ports, flags)
		if err != nil {
			return err
		}
		grew := "no"
		if r.grew {
			grew = "yes"
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%v\t%d batches, %d B\t%s\t\n", r.name, r.sent, r.stored, r.queue, r.endBatches, r.endBytes, grew)
	}
	return tw.Flush()
}

type sinkResult struct {
	name                 string
	sent, stored         int
	queue                []int // sampled each second while guests send
	endBatches, endBytes int
	grew                 bool
}

// jaegerCollectorSink: vsock-to-udp-server --to http://…/api/traces, its
// guests v1 streams of emitBatch datagrams straight into its socket (as
// a guest relay sends them).
func jaegerCollectorSink(bin, dir string, ports jaegerv2.Ports, flags []string) (sinkResult, error) {
	proxy, stop, err := delayProxy(fmt.Sprintf("127.0.0.1:%d", ports.HTTP), oneWay)
	if err != nil {
		return sinkResult{}, err
	}
	defer stop()
	batches := make([][][]byte, sinkGuests) // [guest][round]
	traces := make([]string, sinkGuests)
	for g := range sinkGuests {
		batches[g], traces[g] = jaegerBatches(fmt.Sprintf("bench-guest-%d", g))
	}
	sock := filepath.Join(dir, "sinks.hvsock_6831")
	return sinkRun(bin, "vsock-to-udp-server → Jaeger collector (http://)", []string{"vsock-to-udp-server", "--from", "unix://" + sock,
		"--to", "http://" + proxy + "/api/traces"}, flags, sock, ports, traces,
		func() []byte { return wire.AppendHello(nil, wire.KindJaeger) },
		func(g, round int) []byte { return wire.AppendFrame(nil, batches[g][round]) })
}

// forwarderOTLPSink: kata-trace-forwarder --to otlp://, its guests Kata
// 3.x agents writing a batch of frames a second.
func forwarderOTLPSink(bin, dir string, ports jaegerv2.Ports, flags []string) (sinkResult, error) {
	proxy, stop, err := delayProxy(fmt.Sprintf("127.0.0.1:%d", ports.OTLPGRPC), oneWay)
	if err != nil {
		return sinkResult{}, err
	}
	defer stop()
	frames := make([][][]byte, sinkGuests)
	traces := make([]string, sinkGuests)
	for g := range sinkGuests {
		trace := fmt.Sprintf("%d%018d", 1+g%9, uint64(time.Now().UnixNano()+int64(g))%1e18)
		n, _ := new(big.Int).SetString(trace, 10)
		traces[g] = fmt.Sprintf("%032s", n.Text(16))
		s := kata3StreamTrace(sinkRounds*spansPerBatch, trace)
		for len(s) > 0 {
			n := 8 + int(binary.BigEndian.Uint64(s))
			frames[g] = append(frames[g], s[:n])
			s = s[n:]
		}
	}
	sock := filepath.Join(dir, "sinks.sock_10240")
	return sinkRun(bin, "kata-trace-forwarder → Jaeger OTLP (otlp://)", []string{"kata-trace-forwarder", "--from", "unix://" + sock,
		"--to", "otlp://" + proxy}, flags, sock, ports, traces,
		func() []byte { return nil },
		func(g, round int) []byte {
			return bytes.Join(frames[g][round*spansPerBatch:(round+1)*spansPerBatch], nil)
		})
}

// sinkRun starts the role (args), connects the guests (each writing
// hello, then batch(g, round) each second), samples the sink's queue,
// lets it drain, stops it, and counts what Jaeger stored of the guests'
// traces.
func sinkRun(bin, name string, args, flags []string, sock string, ports jaegerv2.Ports, traces []string, hello func() []byte, batch func(g, round int) []byte) (sinkResult, error) {
	r := sinkResult{name: name, sent: sinkGuests * sinkRounds * spansPerBatch}
	mport := freeTCP()
	metrics := fmt.Sprintf("http://127.0.0.1:%d/metrics", mport)
	// The guests are connections of this one process, which the role
	// takes for one guest: its connection limit is raised. (For the
	// Jaeger sink each has its own Process, so their batches join no
	// more than 100 VMs' would.)
	cmd := exec.Command(bin, append(args, "--log-level=warn", "--drain-timeout", "1m", "--max-connections-per-guest", "1000",
		"--metrics-listen", fmt.Sprintf("tcp://127.0.0.1:%d", mport))...)
	cmd.Args = append(cmd.Args, flags...)
	// Its stop says, at ERROR, that each of the 100 agents' connections
	// ends with it (no file descriptor store here), as it must: those
	// lines are left out, every other is shown.
	cmd.Stderr = dropLines(os.Stderr, "agent's connection closed as this process stops")
	if err := cmd.Start(); err != nil {
		return r, err
	}
	waitFile(sock)
	if err := waitHTTP(metrics, 10*time.Second); err != nil {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		return r, err
	}
	conns := make([]net.Conn, sinkGuests)
	for g := range conns {
		c, err := net.Dial("unix", sock)
		if err != nil {
			return r, err
		}
		defer c.Close()
		if _, err := c.Write(hello()); err != nil {
			return r, err
		}
		conns[g] = c
	}
	start := time.Now()
	for round := range sinkRounds {
		// The guests' flushes spread over the second, as VMs' would.
		var wg sync.WaitGroup
		for g, c := range conns {
			wg.Add(1)
			go func() {
				defer wg.Done()
				time.Sleep(time.Until(start.Add(time.Duration(round)*time.Second + time.Duration(g)*time.Second/sinkGuests)))
				_, _ = c.Write(batch(g, round))
			}()
		}
		wg.Wait()
		r.queue = append(r.queue, int(scrape(metrics, "katatrace_sink_queue_batches")))
	}
	time.Sleep(time.Until(start.Add(sinkRounds * time.Second)))
	r.endBatches, r.endBytes = int(scrape(metrics, "katatrace_sink_queue_batches")), int(scrape(metrics, "katatrace_sink_queue_bytes"))
	// Grew: more than a second's batches wait at the end, more than at
	// the start.
	r.grew = r.endBatches > sinkGuests && r.endBatches > r.queue[0]
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if scrape(metrics, "katatrace_sink_queue_batches")+scrape(metrics, "katatrace_sink_in_flight_requests") == 0 {
			break
		}
	}
	stopAndMeasure(cmd, time.Now())
	time.Sleep(2 * time.Second) // Jaeger's batch processor stores what it took
	for _, t := range traces {
		r.stored += storedSpans(ports.Query, t)
	}
	return r, nil
}

// jaegerBatches makes one guest's emitBatch datagrams (one per round, of
// spansPerBatch spans, all of one trace), with a jaeger-client-go tracer
// of its own (its own Process), and the trace's id.
func jaegerBatches(service string) ([][]byte, string) {
	var out [][]byte
	rep := &batchEvery{tr: tracing.NewTransport(func(p []byte) { out = append(out, bytes.Clone(p)) }, 0)}
	tracer, closer := jaeger.NewTracer(service, jaeger.NewConstSampler(true), rep)
	root := tracer.StartSpan("root-span") // never finished: only its children are sent
	for i := range sinkRounds * spansPerBatch {
		sp := tracer.StartSpan("child", opentracing.ChildOf(root.Context()))
		sp.SetTag("index", i)
		sp.SetTag("mod", "rpc.rs")
		sp.LogKV("event", "rpc call from shim to agent", "level", "INFO")
		sp.Finish()
	}
	_ = closer.Close()
	return out, root.Context().(jaeger.SpanContext).TraceID().String()
}

// batchEvery reports spans in batches of spansPerBatch.
type batchEvery struct {
	tr jaeger.Transport
	n  int
}

func (r *batchEvery) Report(s *jaeger.Span) {
	_, _ = r.tr.Append(s)
	if r.n++; r.n%spansPerBatch == 0 {
		_, _ = r.tr.Flush()
	}
}
func (r *batchEvery) Close() {}

// storedSpans counts the spans Jaeger's query API has of a trace.
func storedSpans(queryPort int, trace string) int {
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/api/traces/%s", queryPort, strings.TrimLeft(trace, "0")))
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	var v struct {
		Data []struct {
			Spans []json.RawMessage `json:"spans"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
		return 0
	}
	n := 0
	for _, t := range v.Data {
		n += len(t.Spans)
	}
	return n
}

// delayProxy forwards TCP connections to target, holding every chunk of
// bytes read, each way, for delay before writing it on: a peer 2×delay
// away. It returns its address and how to stop it.
func delayProxy(target string, delay time.Duration) (string, func(), error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				u, err := net.Dial("tcp", target)
				if err != nil {
					_ = c.Close()
					return
				}
				var wg sync.WaitGroup
				wg.Add(2)
				go func() { defer wg.Done(); delayCopy(u, c, delay) }()
				go func() { defer wg.Done(); delayCopy(c, u, delay) }()
				wg.Wait()
				_ = c.Close()
				_ = u.Close()
			}()
		}
	}()
	return ln.Addr().String(), func() { _ = ln.Close() }, nil
}

// delayCopy copies src to dst, each chunk delay after it was read.
func delayCopy(dst, src net.Conn, delay time.Duration) {
	type chunk struct {
		b  []byte
		at time.Time
	}
	ch := make(chan chunk, 4096)
	go func() {
		defer close(ch)
		buf := make([]byte, 64<<10)
		for {
			n, err := src.Read(buf)
			if n > 0 {
				ch <- chunk{bytes.Clone(buf[:n]), time.Now().Add(delay)}
			}
			if err != nil {
				return
			}
		}
	}()
	for c := range ch {
		time.Sleep(time.Until(c.at))
		if _, err := dst.Write(c.b); err != nil {
			_ = src.Close()
			break
		}
	}
	for range ch { // src closed: drain the reader
	}
	if tc, ok := dst.(*net.TCPConn); ok {
		_ = tc.CloseWrite()
	}
}

// dropLines writes to w what is written to it, but for lines holding
// skip.
func dropLines(w io.Writer, skip string) io.Writer {
	r, pw := io.Pipe()
	go func() {
		sc := bufio.NewScanner(r)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			if !strings.Contains(sc.Text(), skip) {
				fmt.Fprintln(w, sc.Text())
			}
		}
	}()
	return pw
}
