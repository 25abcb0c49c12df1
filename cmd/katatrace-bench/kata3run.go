package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"
	"google.golang.org/grpc"
)

// nullOTLP is an OTLP/gRPC endpoint in the bench's process that takes
// every export and discards it, counting its spans: the forwarder's cost
// without Jaeger's ingest on the same cores.
type nullOTLP struct {
	ptraceotlp.UnimplementedGRPCServer
	spans atomic.Int64
	addr  string
	srv   *grpc.Server
}

func (n *nullOTLP) Export(_ context.Context, req ptraceotlp.ExportRequest) (ptraceotlp.ExportResponse, error) {
	n.spans.Add(int64(req.Traces().SpanCount()))
	return ptraceotlp.NewExportResponse(), nil
}

func startNullOTLP() (*nullOTLP, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	n := &nullOTLP{addr: ln.Addr().String(), srv: grpc.NewServer()}
	ptraceotlp.RegisterGRPCServer(n.srv, n)
	go func() { _ = n.srv.Serve(ln) }()
	return n, nil
}

// row is one path's figures.
type row struct {
	name             string
	spansPerSec, cpu float64 // cpu: seconds per 100,000 spans
	allocs           float64 // per span; <0: not measured
	rssMiB           float64
	rssNote          string
}

// forwarderRun pushes stream (spans of Kata frames) through one
// kata-trace-forwarder into to, and measures it. Allocations are the
// forwarder's own count (go_memstats_mallocs_total on its
// --metrics-listen) from before the stream to once every frame was handed
// to its sink and the sink's queue was empty.
func forwarderRun(bin, dir, name, to string, stream []byte, spans int) (row, error) {
	sock := fmt.Sprintf("%s/fw%d.sock_10240", dir, rand.IntN(1e9))
	mport := freeTCP()
	fw := exec.Command(bin, "kata-trace-forwarder", "--from", "unix://"+sock, "--to", to,
		"--queue-bytes", "1GiB", "--drain-timeout", "5m", "--log-level=warn", "--metrics-listen", fmt.Sprintf("tcp://127.0.0.1:%d", mport))
	fw.Stderr = os.Stderr
	if err := fw.Start(); err != nil {
		return row{}, err
	}
	waitFile(sock)
	metrics := fmt.Sprintf("http://127.0.0.1:%d/metrics", mport)
	if err := waitHTTP(metrics, 10*time.Second); err != nil {
		_ = fw.Process.Kill()
		_ = fw.Wait()
		return row{}, err
	}
	m0 := scrape(metrics, "go_memstats_mallocs_total")
	start := time.Now()
	c, err := net.Dial("unix", sock)
	if err != nil {
		return row{}, err
	}
	if _, err := c.Write(stream); err != nil {
		return row{}, err
	}
	_ = c.Close()
	// Polled every 250 ms, one page each: a scrape allocates in the
	// forwarder too (a thousand or more), and what the scrapes took is
	// taken off (measured by two more, back to back).
	allocs, scrapes := -1.0, 0
	for deadline := time.Now().Add(5 * time.Minute); time.Now().Before(deadline); time.Sleep(250 * time.Millisecond) {
		m := scrapeAll(metrics, "katatrace_forwarder_spans_total", "katatrace_sink_queue_batches", "katatrace_sink_in_flight_requests", "go_memstats_mallocs_total")
		scrapes++
		if m["katatrace_forwarder_spans_total"] >= float64(spans) && m["katatrace_sink_queue_batches"]+m["katatrace_sink_in_flight_requests"] == 0 {
			a := scrape(metrics, "go_memstats_mallocs_total")
			perScrape := scrape(metrics, "go_memstats_mallocs_total") - a
			allocs = (m["go_memstats_mallocs_total"] - m0 - perScrape*float64(scrapes)) / float64(spans)
			break
		}
	}
	took, cpu, rss := stopAndMeasure(fw, start)
	return row{name: name, spansPerSec: float64(spans) / took.Seconds(), cpu: cpu.Seconds() * 1e5 / float64(spans),
		allocs: allocs, rssMiB: float64(rss) / 1024}, nil
}

// scrape sums a metric's series (any labels) on a Prometheus page; -1
// when it is not there.
func scrape(url, name string) float64 { return scrapeAll(url, name)[name] }

// scrapeAll is scrape of several metrics, from one page.
func scrapeAll(url string, names ...string) map[string]float64 {
	out := map[string]float64{}
	for _, n := range names {
		out[n] = -1
	}
	resp, err := http.Get(url)
	if err != nil {
		return out
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, name := range names {
		ms := regexp.MustCompile(`(?m)^`+regexp.QuoteMeta(name)+`(?:\{[^}]*\})? (\S+)$`).FindAllSubmatch(b, -1)
		if ms == nil {
			continue
		}
		sum := 0.0
		for _, m := range ms {
			v, _ := strconv.ParseFloat(string(m[1]), 64)
			sum += v
		}
		out[name] = sum
	}
	return out
}

// kata3Bincode is n spans as a Kata 2.2–3.28 agent writes them: frames of
// bincode SpanData (opentelemetry 0.14), the same span as kata3Stream's.
func kata3Bincode(n int) []byte {
	var out bytes.Buffer
	traceHi, traceLo := rand.Uint64(), rand.Uint64()
	now := time.Now()
	le := binary.LittleEndian
	for i := range n {
		id, parent := uint64(i)+2, uint64(1)
		if i == n-1 {
			id, parent = 1, 0
		}
		var b []byte
		str := func(s string) { b = le.AppendUint64(b, uint64(len(s))); b = append(b, s...) }
		tm := func(secs uint64, nanos uint32) { b = le.AppendUint64(b, secs); b = le.AppendUint32(b, nanos) }
		b = le.AppendUint64(b, traceLo) // u128, little-endian: the low half first
		b = le.AppendUint64(b, traceHi)
		b = le.AppendUint64(b, id)
		b = append(b, 1, 0, 0) // trace_flags, is_remote, no trace_state
		b = le.AppendUint64(b, parent)
		b = le.AppendUint32(b, 1) // Server
		str("child-span")
		tm(uint64(now.Unix()), uint32(now.Nanosecond()))
		tm(uint64(now.Unix()), uint32(now.Nanosecond()))
		// attributes: mod, index, ints, ok (Value variants: 0 Bool, 1 I64,
		// 2 F64, 3 String, 4 Array of the same four)
		b = le.AppendUint64(b, 4)
		str("mod")
		b = le.AppendUint32(b, 3)
		str("rpc.rs")
		str("index")
		b = le.AppendUint32(b, 1)
		b = le.AppendUint64(b, uint64(i))
		str("ints")
		b = le.AppendUint32(b, 4)
		b = le.AppendUint32(b, 1)
		b = le.AppendUint64(b, 3)
		for _, v := range []uint64{1, 2, 0} {
			b = le.AppendUint64(b, v)
		}
		str("ok")
		b = le.AppendUint32(b, 0)
		b = append(b, 1)
		b = le.AppendUint64(b, 4) // evict_list
		for _, k := range []string{"ints", "ok", "index", "mod"} {
			str(k)
		}
		b = le.AppendUint32(b, 128)
		b = le.AppendUint32(b, 0)
		b = append(b, 1) // message_events: one
		b = le.AppendUint64(b, 1)
		str("rpc call from shim to agent")
		tm(uint64(now.Unix()), 0)
		b = le.AppendUint64(b, 1)
		str("level")
		b = le.AppendUint32(b, 3)
		str("INFO")
		b = le.AppendUint32(b, 0)
		b = le.AppendUint32(b, 128)
		b = le.AppendUint32(b, 0)
		b = append(b, 0) // no links
		b = le.AppendUint32(b, 128)
		b = le.AppendUint32(b, 0)
		b = le.AppendUint32(b, 0) // Unset
		str("")
		b = append(b, 1) // resource
		b = le.AppendUint64(b, 1)
		str("service.name")
		b = le.AppendUint32(b, 3)
		str("unknown_service")
		_ = binary.Write(&out, binary.BigEndian, uint64(len(b)))
		out.Write(b)
	}
	return out.Bytes()
}
