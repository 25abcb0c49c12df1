package roles_test

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/opentracing/opentracing-go"
	"github.com/uber/jaeger-client-go"

	"github.com/katatrace/katatrace/internal/jaegertest"
	"github.com/katatrace/katatrace/internal/storetest"
	"github.com/katatrace/katatrace/internal/testutil"
	"github.com/katatrace/katatrace/tracing"
	"github.com/katatrace/katatrace/wire"
)

// The fault and abuse suite: each case offers datagrams through real relay
// processes while something goes wrong, and accounts for every one: sent,
// delivered, dropped and counted (by the relays' own metrics or logs), and
// lost, which must be 0 wherever the design promises it.
//
// The table is logged at the end; KATATRACE_FAULT_TABLE=FILE also writes it
// to FILE.

type faultRow struct {
	name                     string
	sent, delivered, counted int
	lossless                 bool // lost must be 0
	// tolerance is the loss allowed where no count can be exact: the
	// kernel reports a UDP datagram to a closed port only by failing a
	// later send, and two may share one report.
	tolerance int
	note      string
}

var faults struct {
	mu   sync.Mutex
	rows []faultRow
}

// account records a case's row and fails it if it lost what it must not.
func account(t *testing.T, r faultRow) {
	t.Helper()
	lost := r.sent - r.delivered - r.counted
	t.Logf("%s: sent %d, delivered %d, dropped and counted %d, lost %d; %s", r.name, r.sent, r.delivered, r.counted, lost, r.note)
	if r.lossless && lost > r.tolerance {
		t.Errorf("%s: %d datagrams lost without a count", r.name, lost)
	}
	if r.delivered == 0 {
		t.Errorf("%s: nothing delivered: the path itself is broken", r.name)
	}
	faults.mu.Lock()
	faults.rows = append(faults.rows, r)
	faults.mu.Unlock()
}

func TestFaultSuite(t *testing.T) {
	t.Run("host-killed", faultHostKilled)
	t.Run("host-restarted-store", faultHostRestartedInStore)
	t.Run("socat-kept-in-store", faultSocatKeptInStore)
	t.Run("guest-killed", faultGuestKilled)
	t.Run("jaeger-udp-down", faultUDPDown)
	t.Run("collector-down", faultCollectorDown)
	t.Run("flood", faultFlood)
	t.Run("idle-connections", faultIdle)
	t.Run("slow-loris", faultSlowLoris)
	t.Run("hostile-bytes", faultHostile)

	var b bytes.Buffer
	w := tabwriter.NewWriter(&b, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(w, "fault\tsent\tdelivered\tdropped, counted\tlost\t")
	faults.mu.Lock()
	for _, r := range faults.rows {
		fmt.Fprintf(w, "%s\t%d\t%d\t%d\t%d\t  %s\n", r.name, r.sent, r.delivered, r.counted, r.sent-r.delivered-r.counted, r.note)
	}
	faults.mu.Unlock()
	w.Flush()
	t.Logf("fault and abuse suite:\n%s", b.String())
	if f := os.Getenv("KATATRACE_FAULT_TABLE"); f != "" {
		if err := os.WriteFile(f, b.Bytes(), 0o644); err != nil {
			t.Error(err)
		}
	}
}

// hostRelay starts vsock-to-udp-server on unix socket path (and any more
// args) with metrics on a free port; it returns the process and a scrape.
func hostRelay(t *testing.T, path, to string, args ...string) (*testutil.Proc, func(metric string) int) {
	t.Helper()
	port := testutil.FreePort(t, "tcp")
	p := start(t, nil, "vsock-to-udp-server", append([]string{"--from", "unix://" + path, "--to", to,
		"--metrics-listen", fmt.Sprintf("tcp://127.0.0.1:%d", port)}, args...)...)
	p.WaitLog("listening")
	return p, func(metric string) int { return scrape(t, port, metric) }
}

// scrape sums the samples of a metric (name, or name{labels...} as they
// start) at /metrics.
func scrape(t *testing.T, port int, metric string) int {
	t.Helper()
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", port))
	if err != nil {
		t.Fatalf("scrape metrics: %v", err)
	}
	defer resp.Body.Close()
	sum := 0.0
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		name, value, ok := strings.Cut(sc.Text(), " ")
		if ok && strings.HasPrefix(name, metric) && (len(name) == len(metric) || strings.ContainsAny(name[len(metric):len(metric)+1], "{,")) {
			v, _ := strconv.ParseFloat(value, 64)
			sum += v
		}
	}
	return int(sum)
}

// guestRelay starts jaeger-client-socat-redirector towards path and
// returns it with a UDP sender to it.
func guestRelay(t *testing.T, path string, port int) (*testutil.Proc, net.Conn) {
	t.Helper()
	if port == 0 {
		port = testutil.FreePort(t, "udp")
	}
	gp := start(t, nil, "jaeger-client-socat-redirector", "--from", fmt.Sprintf("udp://127.0.0.1:%d", port),
		"--to", "unix://"+path, "--backoff-max", "100ms")
	gp.WaitLog("connected to host")
	return gp, udpSender(t, port)
}

// numbered is datagram i of a case: "KT" and its number, padded to size.
func numbered(i, size int) []byte {
	p := make([]byte, size)
	copy(p, "KT")
	binary.BigEndian.PutUint32(p[2:], uint32(i))
	return p
}

// tally counts the distinct numbered datagrams in got, and duplicates.
func tally(got [][]byte, total int) (distinct, dups int) {
	for _, n := range counts(got, total) {
		if n > 0 {
			distinct++
		}
		dups += max(n-1, 0)
	}
	return distinct, dups
}

// counts is how many times each numbered datagram below total arrived.
func counts(got [][]byte, total int) []int {
	seen := make([]int, total)
	for _, p := range got {
		if len(p) >= 6 && string(p[:2]) == "KT" {
			if i := int(binary.BigEndian.Uint32(p[2:])); i < total {
				seen[i]++
			}
		}
	}
	return seen
}

// paced sends total numbered datagrams at rate per second, calling at(i)
// before datagram i.
func paced(t *testing.T, c net.Conn, total, rate, size int, at func(i int)) {
	start := time.Now()
	for i := range total {
		at(i)
		if _, err := c.Write(numbered(i, size)); err != nil {
			t.Fatal(err)
		}
		if ahead := time.Until(start.Add(time.Duration(i+1) * time.Second / time.Duration(rate))); ahead > 0 {
			time.Sleep(ahead)
		}
	}
}

// stopGuest drains a guest relay with SIGTERM.
func stopGuest(t *testing.T, gp *testutil.Proc) {
	t.Helper()
	gp.Signal(syscall.SIGTERM)
	if code := gp.Wait(20 * time.Second); code != 0 {
		t.Fatalf("guest relay exit %d\n%s", code, gp.Stderr.String())
	}
}

// faultHostKilled: while a guest relay carries 4,000 datagrams/s, its host
// relay is SIGKILLed three times and started again. What was in flight
// when the host died is resent from the guest's queue (protocol v2), so
// every datagram arrives; what the dead host had handed on is not handed on
// twice once it restarts, save a batch it handed on but did not live to
// confirm.
func faultHostKilled(t *testing.T) {
	path := filepath.Join(testutil.SockDir(t), "h_6831")
	sink := testutil.NewUDPSink(t)
	hp, _ := hostRelay(t, path, sink.Addr())
	gp, c := guestRelay(t, path, 0)
	const rate, total = 4000, 16000
	kills := map[int]bool{total / 5: true, 2 * total / 5: true, 3 * total / 5: true}
	paced(t, c, total, rate, 200, func(i int) {
		if kills[i] {
			hp.Signal(syscall.SIGKILL)
			hp.Wait(10 * time.Second)
			time.Sleep(200 * time.Millisecond) // the host is away; the guest queues
			hp, _ = hostRelay(t, path, sink.Addr())
		}
	})
	stopGuest(t, gp)
	got, dups := tally(sink.Quiet(300*time.Millisecond), total)
	account(t, faultRow{name: "host relay SIGKILLed 3x, 0.2 s away each, at 4,000/s", sent: total, delivered: got, lossless: true,
		note: fmt.Sprintf("%d duplicates (handed on by a host that died before confirming)", dups)})
}

// storedHostRelay starts vsock-to-udp-server on path as the next process
// of a unit whose file descriptor store m stands in for.
func storedHostRelay(t *testing.T, m *storetest.Manager, path, to string) *testutil.Proc {
	t.Helper()
	p := m.Start([]string{"KATATRACE_TEST_AS_MAIN=1"}, bin(t, "vsock-to-udp-server"), "--from", "unix://"+path, "--to", to)
	m.WaitReady(p)
	return p
}

// restartHost stops a host relay as systemctl restart does (SIGTERM: it
// hands over) and starts the next.
func restartHost(t *testing.T, m *storetest.Manager, hp *testutil.Proc, path, to string) *testutil.Proc {
	t.Helper()
	hp.Signal(syscall.SIGTERM)
	if code := hp.Wait(10 * time.Second); code != 0 || !strings.Contains(hp.Stderr.String(), "handed over to the next process") {
		t.Fatalf("host relay exit %d without a handover:\n%s", code, hp.Stderr.String())
	}
	return storedHostRelay(t, m, path, to)
}

// faultHostRestartedInStore: while a v2 guest relay carries 4,000
// datagrams/s, its host relay, a unit with a file descriptor store, is
// restarted three times: the guest's one connection is handed from each
// process to the next, nothing is lost or handed on twice, and the guest
// never reconnects. Then a SIGKILL: the session's state dies with the
// process, so the v2 connection is closed; the guest reconnects and sends
// again what was not confirmed.
func faultHostRestartedInStore(t *testing.T) {
	m := storetest.New(t)
	path := filepath.Join(testutil.SockDir(t), "h_6831")
	sink := testutil.NewUDPSink(t)
	hp := storedHostRelay(t, m, path, sink.Addr())
	gp, c := guestRelay(t, path, 0)
	const rate, total = 4000, 16000
	restarts := map[int]bool{total / 5: true, 2 * total / 5: true, 3 * total / 5: true}
	paced(t, c, total, rate, 200, func(i int) {
		switch {
		case restarts[i]:
			hp = restartHost(t, m, hp, path, sink.Addr())
		case i == 4*total/5:
			if n := strings.Count(gp.Stderr.String(), "connected to host"); n != 1 {
				t.Errorf("the guest relay connected %d times through three restarts, want once", n)
			}
			if got, dups := tally(sink.Quiet(300*time.Millisecond), total); got != i || dups != 0 {
				t.Errorf("through the restarts: %d of the %d sent arrived, %d twice; want each once", got, i, dups)
			}
			hp.Signal(syscall.SIGKILL)
			hp.Wait(10 * time.Second)
			hp = storedHostRelay(t, m, path, sink.Addr())
		}
	})
	stopGuest(t, gp)
	got, dups := tally(sink.Quiet(300*time.Millisecond), total)
	if !strings.Contains(hp.Stderr.String(), "guest connection closed after a crash") {
		t.Errorf("after the SIGKILL, the v2 connection was not closed:\n%s", hp.Stderr.String())
	}
	account(t, faultRow{name: "host relay restarted 3x (fd store), then SIGKILLed, at 4,000/s", sent: total, delivered: got, lossless: true,
		note: fmt.Sprintf("the guest's connection kept through the restarts; %d duplicates (after the SIGKILL: handed on, not confirmed)", dups)})
}

// faultSocatKeptInStore: a socat guest (a raw stream: socat ends when a
// write fails) connects at its start and sends nothing while its host
// relay, a unit with a file descriptor store, restarts; then it sends
// emitBatch datagrams while the host is restarted twice more and
// SIGKILLed once mid-stream: socat's connection is never closed, every
// batch around the restarts arrives, and the crash loses at most what the
// dead process had read and not handed on (the row says how much).
func faultSocatKeptInStore(t *testing.T) {
	needSocat(t)
	m := storetest.New(t)
	path := filepath.Join(testutil.SockDir(t), "h_6831")
	sink := testutil.NewUDPSink(t)
	hp := storedHostRelay(t, m, path, sink.Addr())
	port := testutil.FreePort(t, "udp")
	socat := startSocat(t, "-u", fmt.Sprintf("UDP-RECV:%d,bind=127.0.0.1", port), "UNIX-CONNECT:"+path)
	c := udpSender(t, port)
	const rate, total = 500, 2000
	dgs := emitBatches(t, total)
	// socat connects at its start and sends nothing until its first
	// datagram: that connection is kept through a restart too.
	testutil.Eventually(t, 10*time.Second, "socat's connection in the store", func() bool {
		return slices.ContainsFunc(m.Names(), func(n string) bool { return strings.HasPrefix(n, "kt-n.") })
	})
	hp = restartHost(t, m, hp, path, sink.Addr())
	testutil.Eventually(t, 10*time.Second, "the path to carry a probe", func() bool { return sendProbe(c, dgs[0], sink) })
	base := len(sink.Quiet(200 * time.Millisecond))
	var beforeKill int
	for i, p := range dgs {
		switch i {
		case total / 4, total / 2:
			hp = restartHost(t, m, hp, path, sink.Addr())
		case 3 * total / 4:
			beforeKill = len(sink.Quiet(300 * time.Millisecond))
		case 3*total/4 + 100: // mid-stream
			hp.Signal(syscall.SIGKILL)
			hp.Wait(10 * time.Second)
			hp = storedHostRelay(t, m, path, sink.Addr())
		}
		if _, err := c.Write(p); err != nil {
			t.Fatal(err)
		}
		// Paced, never catching up in a burst: socat's UDP socket would
		// overflow, which is not what this case is about.
		time.Sleep(time.Second / rate)
	}
	got := len(sink.Quiet(500*time.Millisecond)) - base
	if !running(socat.Process.Pid) {
		t.Fatal("socat exited: its connection was closed")
	}
	if beforeKill-base < 3*total/4 {
		t.Errorf("%d of the %d batches sent before the SIGKILL arrived: the restarts lost some", beforeKill-base, 3*total/4)
	}
	if !strings.Contains(hp.Stderr.String(), "connection taken up after a crash") {
		t.Errorf("socat's connection was not taken up after the crash:\n%s", hp.Stderr.String())
	}
	account(t, faultRow{name: "socat guest: host restarted 3x (fd store), SIGKILLed once, at 500/s", sent: total, delivered: got,
		note: "socat's connection kept throughout; lost: what the killed host had read and not handed on"})
}

// running reports whether process pid runs: not a zombie (one that
// exited and was not waited for still takes signals).
func running(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	_, rest, _ := strings.Cut(string(b), ") ") // the name may hold spaces
	return !strings.HasPrefix(rest, "Z") && !strings.HasPrefix(rest, "X")
}

// sendProbe sends p and reports whether it arrived.
func sendProbe(c net.Conn, p []byte, sink *testutil.UDPSink) bool {
	_, _ = c.Write(p)
	return len(sink.WaitFor(1, 50*time.Millisecond)) > 0
}

// faultGuestKilled: a guest relay is SIGKILLed mid-stream at 2,000/s and
// started again on the same port. What it had read and not yet had
// confirmed dies with it: the row shows how much, and that the next relay
// carries on.
func faultGuestKilled(t *testing.T) {
	path := filepath.Join(testutil.SockDir(t), "h_6831")
	sink := testutil.NewUDPSink(t)
	hostRelay(t, path, sink.Addr())
	port := testutil.FreePort(t, "udp")
	gp, c := guestRelay(t, path, port)
	const rate, total = 2000, 6000
	paced(t, c, total, rate, 200, func(i int) {
		if i == total/2 {
			gp.Signal(syscall.SIGKILL)
			gp.Wait(10 * time.Second)
			gp, _ = guestRelay(t, path, port)
		}
	})
	stopGuest(t, gp)
	dgs := sink.Quiet(300 * time.Millisecond)
	got, _ := tally(dgs, total)
	// Every datagram is accounted for by when it was sent: the killed
	// relay can take with it only what it read (or its socket held) in its
	// last moments, a second's worth at most; everything sent earlier, and
	// everything sent after the restart (which waited for the new relay to
	// be ready, so none went to a closed port), is delivered.
	const window = rate // a second before the kill
	missing := missingIndexes(dgs, total)
	var died int
	for _, i := range missing {
		if i < total/2-window || i >= total/2 {
			t.Errorf("datagram %d lost: sent outside the killed relay's last second (%d-%d)", i, total/2-window, total/2-1)
		} else {
			died++
		}
	}
	account(t, faultRow{name: "guest relay SIGKILLed at 2,000/s, restarted", sent: total, delivered: got, counted: died, lossless: true,
		note: fmt.Sprintf("%d died with the killed relay (read or in its socket in its last second, unconfirmed); none sent before or after", died)})
}

// missingIndexes lists the numbered datagrams below total that got lacks.
func missingIndexes(got [][]byte, total int) []int {
	var missing []int
	for i, n := range counts(got, total) {
		if n == 0 {
			missing = append(missing, i)
		}
	}
	return missing
}

// faultUDPDown: the Jaeger agent's UDP port closes for 0.5 s and opens
// again while 2,000 datagrams/s flow. UDP gives no receipt: the host counts
// the sends the closed port refused, and the earlier ones those refusals
// reveal (sink_port_closed).
func faultUDPDown(t *testing.T) {
	path := filepath.Join(testutil.SockDir(t), "h_6831")
	rx, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	addr := rx.LocalAddr().(*net.UDPAddr)
	var got atomic.Int64
	var mu sync.Mutex
	var seen [][]byte
	read := func(c *net.UDPConn) {
		buf := make([]byte, 65536)
		for {
			n, err := c.Read(buf)
			if err != nil {
				return
			}
			got.Add(1)
			mu.Lock()
			seen = append(seen, bytes.Clone(buf[:n]))
			mu.Unlock()
		}
	}
	go read(rx)
	_, metric := hostRelay(t, path, "udp://"+addr.String())
	gp, c := guestRelay(t, path, 0)
	const rate, total = 2000, 6000
	paced(t, c, total, rate, 200, func(i int) {
		switch i {
		case total / 3:
			rx.Close()
		case total/3 + rate/2:
			if rx, err = net.ListenUDP("udp", addr); err != nil {
				t.Fatal(err)
			}
			go read(rx)
		}
	})
	stopGuest(t, gp)
	testutil.Eventually(t, 5*time.Second, "quiet", func() bool { n := got.Load(); time.Sleep(200 * time.Millisecond); return got.Load() == n })
	rx.Close()
	counted := metric(`katatrace_host_dropped_datagrams_total{reason="sink_refused"}`) + metric(`katatrace_host_dropped_datagrams_total{reason="sink_port_closed"}`)
	mu.Lock()
	delivered, _ := tally(seen, total)
	mu.Unlock()
	account(t, faultRow{name: "Jaeger UDP port closed 0.5 s at 2,000/s", sent: total, delivered: delivered, counted: counted, lossless: true, tolerance: total / 1000,
		note: "counted: sends the closed port refused, and the earlier ones each refusal reveals (UDP has no receipt: within 0.1%)"})
}

// emitBatches makes n jaeger-client-go emitBatch datagrams, one span each,
// as an agent's tracer sends them.
func emitBatches(t *testing.T, n int) [][]byte {
	var out [][]byte
	tr, closer := jaeger.NewTracer("fault-suite", jaeger.NewConstSampler(true),
		flushEach{tracing.NewTransport(func(p []byte) { out = append(out, bytes.Clone(p)) }, 0)})
	for i := range n {
		tr.StartSpan("op", opentracing.Tag{Key: "i", Value: i}).Finish()
	}
	_ = closer.Close()
	if len(out) != n {
		t.Fatalf("made %d emitBatch datagrams, want %d", len(out), n)
	}
	return out
}

// flushEach reports each span in a batch of its own.
type flushEach struct{ tr jaeger.Transport }

func (r flushEach) Report(s *jaeger.Span) { _, _ = r.tr.Append(s); _, _ = r.tr.Flush() }
func (r flushEach) Close()                {}

// faultCollectorDown: the Jaeger collector answers 503 for 0.5 s while
// 1,000 batches/s flow through a host relay posting to it; the relay
// retries, so every batch is accepted once it recovers.
func faultCollectorDown(t *testing.T) {
	const rate, total = 1000, 3000
	dgs := emitBatches(t, total)
	var down atomic.Bool
	var accepted atomic.Int64
	col := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if down.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		b, err := jaegertest.ReadBatch(body) // a guest's batches joined: one span each
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		accepted.Add(int64(len(b.Spans)))
		w.WriteHeader(http.StatusAccepted)
	}))
	defer col.Close()
	path := filepath.Join(testutil.SockDir(t), "h_6831")
	_, metric := hostRelay(t, path, col.URL+"/api/traces")
	gp, c := guestRelay(t, path, 0)
	start := time.Now()
	for i, p := range dgs {
		switch i {
		case total / 3:
			down.Store(true)
		case total/3 + rate/2:
			down.Store(false)
		}
		if _, err := c.Write(p); err != nil {
			t.Fatal(err)
		}
		if ahead := time.Until(start.Add(time.Duration(i+1) * time.Second / rate)); ahead > 0 {
			time.Sleep(ahead)
		}
	}
	stopGuest(t, gp)
	testutil.Eventually(t, 20*time.Second, "every batch accepted or counted", func() bool {
		return int(accepted.Load())+metric(`katatrace_host_dropped_datagrams_total`) >= total
	})
	account(t, faultRow{name: "HTTP collector 503 for 0.5 s at 1,000/s", sent: total, delivered: int(accepted.Load()),
		counted: metric(`katatrace_host_dropped_datagrams_total`), lossless: true, note: "retried with backoff until accepted"})
}

// faultFlood: 20 guests flood one host relay with 1 KiB frames as fast as
// they can while a quiet guest, through its own relay, sends 100: with
// default flags every one of the quiet guest's arrives.
func faultFlood(t *testing.T) {
	path := filepath.Join(testutil.SockDir(t), "h_6831")
	sink := testutil.NewUDPSink(t)
	hp, metric := hostRelay(t, path, sink.Addr())
	var floods []*testutil.Proc
	for range 20 {
		floods = append(floods, start(t, nil, "katatrace-test-flood-frames", path, "1024", "1"))
	}
	gp, c := guestRelay(t, path, 0)
	testutil.Eventually(t, 10*time.Second, "the flood paced", func() bool { return metric("katatrace_host_budget_paused_seconds_total") > 0 })
	paced(t, c, 100, 100, 200, func(int) {})
	stopGuest(t, gp)
	for _, f := range floods {
		f.Signal(syscall.SIGKILL)
	}
	got, _ := tally(sink.Quiet(500*time.Millisecond), 100)
	flooded := metric("katatrace_host_datagrams_total") - got
	account(t, faultRow{name: "20 guests flooding 1 KiB frames, a quiet guest sends 100", sent: 100, delivered: got, lossless: true,
		note: fmt.Sprintf("flooders handed on %d, paced to their budgets (reading paused %ds, 20 guests together); host RSS %s", flooded, metric("katatrace_host_budget_paused_seconds_total"), rss(hp))})
}

// rss is a process's resident memory.
func rss(p *testutil.Proc) string {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.Cmd.Process.Pid))
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			return strings.Join(strings.Fields(v), " ")
		}
	}
	return "?"
}

// goodGuest sends 100 datagrams through a guest relay and counts them at
// the sink.
func goodGuest(t *testing.T, path string, sink *testutil.UDPSink) int {
	gp, c := guestRelay(t, path, 0)
	paced(t, c, 100, 1000, 200, func(int) {})
	stopGuest(t, gp)
	got, _ := tally(sink.Quiet(300*time.Millisecond), 100)
	return got
}

// faultIdle: 2,000 connections that never send a byte are held (each TCP
// loopback connection a guest of its own) while a good guest is served.
func faultIdle(t *testing.T) {
	path := filepath.Join(testutil.SockDir(t), "h_6831")
	sink := testutil.NewUDPSink(t)
	tcp := testutil.FreePort(t, "tcp")
	hp, metric := hostRelay(t, path, sink.Addr(), "--from", fmt.Sprintf("tcp://127.0.0.1:%d", tcp))
	for range 2000 {
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", tcp))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
	}
	testutil.Eventually(t, 20*time.Second, "2,000 held", func() bool { return metric("katatrace_host_connections") >= 2000 })
	got := goodGuest(t, path, sink)
	account(t, faultRow{name: "2,000 idle connections held", sent: 100, delivered: got, lossless: true,
		note: fmt.Sprintf("%d held, host RSS %s; --hello-timeout closes them", metric("katatrace_host_connections")-0, rss(hp))})
}

// faultSlowLoris: 200 connections send half a frame and stall; the host
// closes them after --frame-timeout while a good guest is served.
func faultSlowLoris(t *testing.T) {
	path := filepath.Join(testutil.SockDir(t), "h_6831")
	sink := testutil.NewUDPSink(t)
	tcp := testutil.FreePort(t, "tcp")
	_, metric := hostRelay(t, path, sink.Addr(), "--from", fmt.Sprintf("tcp://127.0.0.1:%d", tcp), "--frame-timeout", "1s")
	var half []byte
	half = wire.AppendHelloV2(half, wire.KindJaeger, 1, 1)
	half = append(half, 0, 0, 4, 0, 'x') // a 1 KiB frame, one byte of it
	for range 200 {
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", tcp))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := c.Write(half); err != nil {
			t.Fatal(err)
		}
	}
	got := goodGuest(t, path, sink)
	testutil.Eventually(t, 20*time.Second, "the slow ones cut", func() bool { return metric("katatrace_host_connections_timed_out_total") == 200 })
	account(t, faultRow{name: "200 slow-loris half frames", sent: 100, delivered: got, lossless: true,
		note: fmt.Sprintf("%d cut by --frame-timeout", metric("katatrace_host_connections_timed_out_total"))})
}

// faultHostile: 300 connections send hostile bytes: random garbage, a
// length past the largest frame, the wrong kind, a bad version, a control
// frame going back; each is cut, counted, and the good guest is served.
func faultHostile(t *testing.T) {
	path := filepath.Join(testutil.SockDir(t), "h_6831")
	sink := testutil.NewUDPSink(t)
	tcp := testutil.FreePort(t, "tcp")
	_, metric := hostRelay(t, path, sink.Addr(), "--from", fmt.Sprintf("tcp://127.0.0.1:%d", tcp), "--raw-split", "read")
	hello := wire.AppendHelloV2(nil, wire.KindJaeger, 1, 1)
	bad := [][]byte{
		append(bytes.Clone(hello), 0x7f, 0xff, 0xff, 0xff),        // a length past any frame
		wire.AppendHelloV2(nil, wire.KindText, 1, 1),              // the wrong kind
		{'K', 'T', 'R', 'C', 0x09, 1, 0, 0},                       // an unknown version
		wire.AppendSeq(wire.AppendSeq(bytes.Clone(hello), 10), 5), // a sequence going back
		append(bytes.Clone(hello), 0x80, 0, 0, 3, 1, 2, 3),        // a control frame of the wrong size
	}
	var wg sync.WaitGroup
	for i := range 300 {
		wg.Go(func() {
			c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", tcp))
			if err != nil {
				t.Error(err)
				return
			}
			defer c.Close()
			p := bad[i%len(bad)]
			if i%6 == 5 {
				p = make([]byte, 4096) // garbage, after a valid hello
				_, _ = rand.Read(p)
				p = append(bytes.Clone(hello), p...)
			}
			_, _ = c.Write(p)
			_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
			_, _ = io.Copy(io.Discard, c)
		})
	}
	got := goodGuest(t, path, sink)
	wg.Wait()
	account(t, faultRow{name: "300 connections of hostile bytes", sent: 100, delivered: got, lossless: true,
		note: fmt.Sprintf("%d cut for protocol errors", metric("katatrace_host_protocol_errors_total"))})
}
