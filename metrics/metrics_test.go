package metrics

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/katatrace/katatrace/endpoint"
	"github.com/katatrace/katatrace/guestid"
	"github.com/katatrace/katatrace/guestrelay"
	"github.com/katatrace/katatrace/hostrelay"
	"github.com/katatrace/katatrace/internal/testutil"
	"github.com/katatrace/katatrace/sink"
	"github.com/katatrace/katatrace/wire"
)

type discard struct{}

func (discard) Send([]byte, guestid.ID) error   { return nil }
func (discard) Flush(context.Context) error     { return nil }
func (discard) Close(ctx context.Context) error { return nil }

// hostWithOneGuest is a host relay that has served one v2 guest: two
// datagrams and a flush.
func hostWithOneGuest(t *testing.T) *hostrelay.Server {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := hostrelay.NewServer(hostrelay.ServerConfig{Kind: wire.KindJaeger, Sink: discard{}, Logger: slog.New(slog.DiscardHandler)})
	go func() { _ = srv.Serve(ln, "tcp://"+ln.Addr().String()) }()
	t.Cleanup(func() { _ = srv.Shutdown(context.Background()) })
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	b := wire.AppendHelloV2(nil, wire.KindJaeger, 1, 1)
	b = wire.AppendFrame(wire.AppendFrame(b, []byte("a")), []byte("bc"))
	if _, err := c.Write(wire.AppendFrame(b, nil)); err != nil {
		t.Fatal(err)
	}
	fr := wire.NewFrameReader(wire.NewStreamReader(c))
	for {
		p, _, err := fr.NextFrame()
		if err != nil {
			t.Fatal(err)
		}
		if len(p) == 0 {
			return srv
		}
	}
}

// fakeRelay is a connected text relay.
type fakeRelay struct{}

func (fakeRelay) Kind() wire.Kind         { return wire.KindText }
func (fakeRelay) Stats() guestrelay.Stats { return guestrelay.Stats{Connected: true} }

func TestCollectorsPassTheLinter(t *testing.T) {
	srv := hostWithOneGuest(t)
	relays := ForRelays(fakeRelay{})
	col := sink.NewCollectorSink("http://127.0.0.1:9/api/traces", 1<<20, 1, 0, slog.New(slog.DiscardHandler))
	t.Cleanup(func() { _ = col.Close(context.Background()) })
	host := ForServer(srv, Host{Sink: col, Listeners: func() map[string]int {
		return map[string]int{"vsock://any:6831": 1, "unix:///run/vc/firecracker/*/root/kata.hvsock_6831": 0}
	}})
	for name, c := range map[string]prometheus.Collector{"host": host, "relay": relays} {
		problems, err := promtest.CollectAndLint(c)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		for _, p := range problems {
			t.Errorf("%s: %s: %s", name, p.Metric, p.Text)
		}
	}
	if n := promtest.CollectAndCount(host, "katatrace_guest_datagrams_total"); n != 1 {
		t.Fatalf("%d guest series, want 1", n)
	}
	for name, n := range map[string]int{"katatrace_host_listeners": 2, "katatrace_sink_up": 1, "katatrace_sink_queue_batches": 1,
		"katatrace_sink_retries_total": 1, "katatrace_sink_last_success_timestamp_seconds": 1, "katatrace_host_unparsed_bytes_total": 1,
		// sink_refused, guest_queue_full, and the collector's sink_lost
		"katatrace_guest_dropped_datagrams_total": 3} {
		if got := promtest.CollectAndCount(host, name); got != n {
			t.Errorf("%d series of %s, want %d", got, name, n)
		}
	}
	want := `
# HELP katatrace_host_datagrams_total Datagrams handed to the sink.
# TYPE katatrace_host_datagrams_total counter
katatrace_host_datagrams_total 2
`
	if err := promtest.CollectAndCompare(host, strings.NewReader(want), "katatrace_host_datagrams_total"); err != nil {
		t.Fatal(err)
	}
}

// lineReader reads newline-ended messages: the least a message stream is.
type lineReader struct{ br *bufio.Reader }

func (r lineReader) Next() ([]byte, error) {
	b, err := r.br.ReadBytes('\n')
	if err != nil {
		return nil, err
	}
	return b[:len(b)-1], nil
}
func (lineReader) OnWait(func())              {}
func (lineReader) Drop() bool                 { return false }
func (lineReader) Lose()                      {}
func (lineReader) Skipped() hostrelay.Skipped { return hostrelay.Skipped{Oversize: 1, Bytes: 100} }
func (lineReader) State() []byte              { return nil }
func (lineReader) Restore([]byte) error       { return nil }
func (lineReader) Close()                     {}

// spanSink refuses "junk" as no span at all, as the Kata span decoder does.
type spanSink struct{ discard }

func (spanSink) Send(p []byte, _ guestid.ID) error {
	if string(p) == "junk" {
		return sink.Malformed(errors.New("not a span"))
	}
	return nil
}

// TestForwarderMetrics: a Kata agents' forwarder counts in its words:
// frames, spans and what it skipped, per agent.
func TestForwarderMetrics(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := hostrelay.NewServer(hostrelay.ServerConfig{Kind: wire.KindKataSpans, Sink: spanSink{}, Logger: slog.New(slog.DiscardHandler),
		Messages: func(r io.Reader, _ hostrelay.Memory) hostrelay.MessageReader { return lineReader{bufio.NewReader(r)} }})
	go func() { _ = srv.Serve(ln, "tcp://"+ln.Addr().String()) }()
	t.Cleanup(func() { _ = srv.Shutdown(context.Background()) })
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("span\njunk\nspan\n")); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 5*time.Second, "3 frames", func() bool { return srv.Stats().Datagrams == 3 })
	col := ForServer(srv, Host{Spans: true})
	problems, err := promtest.CollectAndLint(col)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("%s: %s", p.Metric, p.Text)
	}
	if n := promtest.CollectAndCount(col, "katatrace_host_datagrams_total", "katatrace_guest_datagrams_total"); n != 0 {
		t.Errorf("%d series in a guest relay's words", n)
	}
	want := `
# HELP katatrace_forwarder_frames_total Frames read whole: each a span, or skipped as undecodable.
# TYPE katatrace_forwarder_frames_total counter
katatrace_forwarder_frames_total 3
# HELP katatrace_forwarder_spans_total Spans decoded and handed to the sink.
# TYPE katatrace_forwarder_spans_total counter
katatrace_forwarder_spans_total 2
# HELP katatrace_forwarder_skipped_frames_total Frames not handed on, by reason: undecodable (framed, but no span), oversize (above --max-span-bytes: read through), stalled (not finished within --frame-timeout: dropped, the rest skipped). The connection is kept.
# TYPE katatrace_forwarder_skipped_frames_total counter
katatrace_forwarder_skipped_frames_total{reason="oversize"} 1
katatrace_forwarder_skipped_frames_total{reason="stalled"} 0
katatrace_forwarder_skipped_frames_total{reason="undecodable"} 1
`
	if err := promtest.CollectAndCompare(col, strings.NewReader(want), "katatrace_forwarder_frames_total",
		"katatrace_forwarder_spans_total", "katatrace_forwarder_skipped_frames_total"); err != nil {
		t.Fatal(err)
	}
	if n := promtest.CollectAndCount(col, "katatrace_agent_spans_total"); n != 1 {
		t.Fatalf("%d agent series, want 1", n)
	}
}

func TestServe(t *testing.T) {
	srv := hostWithOneGuest(t)
	port := testutil.FreePort(t, "tcp")
	var notReady atomic.Pointer[error]
	health := Health{Role: "vsock-to-udp-server", Version: "v9.9", Ready: func() error {
		if err := notReady.Load(); err != nil {
			return *err
		}
		return nil
	}}
	m, err := Serve(testutil.Must(endpoint.ParseAddr(fmt.Sprintf("tcp://127.0.0.1:%d", port))), slog.New(slog.DiscardHandler), health, ForServer(srv, Host{}))
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		if err := m.Shutdown(ctx); err != nil {
			t.Error(err)
		}
	}()
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", port))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{`katatrace_host_bytes_total 3`, `katatrace_guest_flushes_total{guest="tcp:127.0.0.1:`, `process_resident_memory_bytes`, `go_goroutines`,
		`katatrace_build_info{goversion="go`, `role="vsock-to-udp-server",version="v9.9"} 1`} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	get := func(path string) (int, string) {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d%s", port, path))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, strings.TrimSpace(string(b))
	}
	for _, c := range []struct {
		path     string
		notReady error
		code     int
		body     string
	}{
		{"/healthz", nil, 200, "ok"},
		{"/readyz", nil, 200, "ready"},
		{"/healthz", errors.New("no socket listening"), 200, "ok"},
		{"/readyz", errors.New("no socket listening"), 503, "not ready: no socket listening"},
	} {
		if c.notReady != nil {
			notReady.Store(&c.notReady)
		}
		if code, body := get(c.path); code != c.code || body != c.body {
			t.Errorf("%s (not ready: %v): %d %q, want %d %q", c.path, c.notReady, code, body, c.code, c.body)
		}
	}
	if _, err := Serve(testutil.Must(endpoint.ParseAddr(fmt.Sprintf("tcp://127.0.0.1:%d", port))), slog.New(slog.DiscardHandler), Health{}); err == nil {
		t.Fatal("a second server on the same port did not fail")
	}
}
