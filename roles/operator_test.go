package roles_test

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/katatrace/katatrace/internal/jaegertest"
	"github.com/katatrace/katatrace/internal/testutil"
	"github.com/katatrace/katatrace/jaegerthrift"
)

// sample reads one series of /metrics at port, or -1 when absent.
func sample(t *testing.T, port int, series string) float64 {
	t.Helper()
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", port))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` (\S+)$`).FindSubmatch(b)
	if m == nil {
		return -1
	}
	v, _ := strconv.ParseFloat(string(m[1]), 64)
	return v
}

func readyz(t *testing.T, port int) (int, string) {
	t.Helper()
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/readyz", port))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, strings.TrimSpace(string(b))
}

// TestFromMatchingNothingIsSaid: a host relay whose --from pattern is
// misspelt (nothing matches) says so: a warning naming what matches
// nothing, systemd's STATUS=, a listener gauge at 0 and /readyz at 503.
// Once a VM is there, it listens, and all of them say that too.
func TestFromMatchingNothingIsSaid(t *testing.T) {
	ns, nsPath := notifySocket(t)
	vc := filepath.Join(testutil.SockDir(t), "vc")
	from := "unix://" + vc + "/firecraker/*/root/kata.hvsock_6831"
	port := testutil.FreePort(t, "tcp")
	p := start(t, []string{"NOTIFY_SOCKET=" + nsPath}, "vsock-to-udp-server", "--from", from,
		"--to", testutil.NewUDPSink(t).Addr(), "--metrics-listen", fmt.Sprintf("tcp://127.0.0.1:%d", port))
	readNotify(t, ns, "READY=1")
	status := fmt.Sprintf("STATUS=listening on 0 sockets; nothing yet for %s", from)
	readNotify(t, ns, status)
	p.WaitLog(`msg="--from has no socket listening: no guest can connect through it"`)
	p.WaitLog("no_match_for=" + vc)
	gauge := fmt.Sprintf(`katatrace_host_listeners{from=%q}`, from)
	if v := sample(t, port, gauge); v != 0 {
		t.Fatalf("%s = %v, want 0", gauge, v)
	}
	if code, body := readyz(t, port); code != http.StatusServiceUnavailable || !strings.Contains(body, "no socket listening") {
		t.Fatalf("/readyz with nothing listening: %d %q", code, body)
	}

	testutil.VMMSocket(t, filepath.Join(vc, "firecraker", "vm1", "root", "kata.hvsock"))
	readNotify(t, ns, "STATUS=listening on 1 sockets")
	p.WaitLog(`msg="--from listening now"`)
	if v := sample(t, port, gauge); v != 1 {
		t.Fatalf("%s = %v once a VM is there, want 1", gauge, v)
	}
	if code, body := readyz(t, port); code != http.StatusOK {
		t.Fatalf("/readyz listening: %d %q", code, body)
	}
	p.Signal(syscall.SIGTERM)
	if code := p.Wait(10 * time.Second); code != 0 {
		t.Fatalf("exit %d\n%s", code, p.Stderr.String())
	}
}

// TestGuestToldCollectorDidNotAccept: with the Jaeger collector down while
// a guest relay drains, the guest says what did not reach it and exits
// non-zero, the host's metrics show the held batches and the outage; once
// the collector is back (and the host reloaded: retry now), every batch
// arrives.
func TestGuestToldCollectorDidNotAccept(t *testing.T) {
	var up atomic.Bool
	var accepted atomic.Int64
	col := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if !up.Load() {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		b, err := jaegertest.ReadBatch(body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		accepted.Add(int64(len(b.Spans))) // a guest's batches go joined
		w.WriteHeader(http.StatusAccepted)
	}))
	defer col.Close()
	host := filepath.Join(testutil.SockDir(t), "h_6831")
	mport := testutil.FreePort(t, "tcp")
	hp := start(t, nil, "vsock-to-udp-server", "--from", "unix://"+host, "--to", col.URL+"/api/traces",
		"--metrics-listen", fmt.Sprintf("tcp://127.0.0.1:%d", mport))
	hp.WaitLog("msg=ready")
	uport := testutil.FreePort(t, "udp")
	gp := start(t, nil, "jaeger-client-socat-redirector", "--from", fmt.Sprintf("udp://127.0.0.1:%d", uport),
		"--to", "unix://"+host, "--drain-timeout", "3s")
	gp.WaitLog("connected to host")
	dgs := jaegertest.Capture(t, "agent", jaegertest.SmallTrace)
	c := udpSender(t, uport)
	for _, d := range dgs {
		if _, err := c.Write(d); err != nil {
			t.Fatal(err)
		}
	}
	testutil.Eventually(t, 10*time.Second, "the host to hand the batches to its sink", func() bool {
		return sample(t, mport, "katatrace_host_datagrams_total") == float64(len(dgs))
	})
	gp.Signal(syscall.SIGTERM)
	if code := gp.Wait(15 * time.Second); code == 0 {
		t.Fatalf("the guest relay exited 0 though the collector accepted nothing\n%s", gp.Stderr.String())
	}
	want := fmt.Sprintf("its endpoint has not accepted %d of this guest's datagrams", len(dgs))
	if out := gp.Stderr.String(); !strings.Contains(out, "drain incomplete: not everything reached the host's endpoint") || !strings.Contains(out, want) {
		t.Fatalf("the guest does not say what was not delivered (want %q):\n%s", want, out)
	}
	sink := fmt.Sprintf("{sink=%q}", col.URL+"/api/traces")
	if n := sample(t, mport, "katatrace_host_flushes_not_accepted_total"); n < 1 {
		t.Errorf("katatrace_host_flushes_not_accepted_total = %v", n)
	}
	if held := sample(t, mport, "katatrace_sink_queue_batches"+sink) + sample(t, mport, "katatrace_sink_in_flight_requests"+sink); held < 1 {
		t.Errorf("the host's metrics show %v batches held during the outage", held)
	}
	if v := sample(t, mport, "katatrace_sink_up"+sink); v != 0 {
		t.Errorf("katatrace_sink_up = %v during the outage", v)
	}
	if code, _ := readyz(t, mport); code != http.StatusServiceUnavailable {
		t.Errorf("/readyz %d during the outage", code)
	}
	if !strings.Contains(hp.Stderr.String(), "collector unreachable: holding batches and retrying") {
		t.Errorf("the host did not log the outage:\n%s", hp.Stderr.String())
	}

	up.Store(true)
	hp.Signal(syscall.SIGHUP)
	spans := 0
	for _, d := range dgs {
		b, err := jaegerthrift.DecodeEmitBatch(d)
		if err != nil {
			t.Fatal(err)
		}
		spans += len(b.Spans)
	}
	testutil.Eventually(t, 10*time.Second, "the held batches to reach the collector", func() bool { return accepted.Load() == int64(spans) })
	hp.WaitLog("collector reachable again")
	if v := sample(t, mport, "katatrace_sink_up"+sink); v != 1 {
		t.Errorf("katatrace_sink_up = %v after the outage", v)
	}
	hp.Signal(syscall.SIGTERM)
	if code := hp.Wait(10 * time.Second); code != 0 {
		t.Fatalf("host exit %d\n%s", code, hp.Stderr.String())
	}
}

// TestJournalPrioritiesUnderSystemd: with stderr the journal's stream
// (JOURNAL_STREAM names it), every log line starts with its priority and
// has no time of its own; with JOURNAL_STREAM naming another file, lines
// are as ever.
func TestJournalPrioritiesUnderSystemd(t *testing.T) {
	for _, ours := range []bool{true, false} {
		f, err := os.Create(filepath.Join(t.TempDir(), "stderr"))
		if err != nil {
			t.Fatal(err)
		}
		var st syscall.Stat_t
		if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
			t.Fatal(err)
		}
		ino := st.Ino
		if !ours {
			ino++
		}
		cmd := exec.Command(bin(t, "vsock-to-udp-server"), "--from", "unix://"+filepath.Join(testutil.SockDir(t), "nodir", "h_6831"),
			"--to", testutil.NewUDPSink(t).Addr())
		cmd.Env = testutil.Env("KATATRACE_TEST_AS_MAIN=1", fmt.Sprintf("JOURNAL_STREAM=%d:%d", st.Dev, ino))
		cmd.Stderr = f
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		testutil.Eventually(t, 10*time.Second, "the warning about nothing listening", func() bool {
			b, _ := os.ReadFile(f.Name())
			return strings.Contains(string(b), "no socket listening")
		})
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
		f.Close()
		b, _ := os.ReadFile(f.Name())
		for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
			warn := strings.Contains(line, "level=WARN")
			switch {
			case ours && warn && !strings.HasPrefix(line, "<4>"), ours && !warn && !strings.HasPrefix(line, "<6>"):
				t.Errorf("under the journal, a line without its priority: %q", line)
			case ours && strings.Contains(line, "time="):
				t.Errorf("under the journal, a line with a time of its own: %q", line)
			case !ours && (strings.HasPrefix(line, "<") || !strings.HasPrefix(line, "time=")):
				t.Errorf("JOURNAL_STREAM of another file, yet: %q", line)
			}
		}
	}
}

// TestRawUnparsedBytesAreSaid: bytes of a raw (socat) stream that are no
// emitBatch are skipped and said: in the disconnect line, SIGUSR1's stats
// and /metrics; the batches around them arrive.
func TestRawUnparsedBytesAreSaid(t *testing.T) {
	sink := testutil.NewUDPSink(t)
	host := filepath.Join(testutil.SockDir(t), "h_6831")
	mport := testutil.FreePort(t, "tcp")
	hp := start(t, nil, "vsock-to-udp-server", "--from", "unix://"+host, "--to", sink.Addr(),
		"--metrics-listen", fmt.Sprintf("tcp://127.0.0.1:%d", mport))
	hp.WaitLog("msg=ready")
	dgs := jaegertest.Capture(t, "agent", jaegertest.SmallTrace)
	c, err := net.Dial("unix", host)
	if err != nil {
		t.Fatal(err)
	}
	junk := bytes.Repeat([]byte("x"), 100)
	stream := slices.Concat(dgs[0], junk, dgs[0])
	if _, err := c.Write(stream); err != nil {
		t.Fatal(err)
	}
	c.Close()
	if got := sink.WaitFor(2, 10*time.Second); len(got) != 2 || !bytes.Equal(got[0], dgs[0]) || !bytes.Equal(got[1], dgs[0]) {
		t.Fatalf("sink got %d datagrams, want the 2 batches around the junk", len(got))
	}
	hp.WaitLog("unparsed_bytes=100")
	if !strings.Contains(hp.Stderr.String(), `msg="guest disconnected"`) {
		t.Fatalf("no disconnect line:\n%s", hp.Stderr.String())
	}
	if v := sample(t, mport, "katatrace_host_unparsed_bytes_total"); v != 100 {
		t.Errorf("katatrace_host_unparsed_bytes_total = %v, want 100", v)
	}
	hp.Signal(syscall.SIGUSR1)
	hp.WaitLog(`msg=stats`)
	testutil.Eventually(t, 5*time.Second, "SIGUSR1's stats to count the unparsed bytes", func() bool {
		for _, l := range strings.Split(hp.Stderr.String(), "\n") {
			if strings.Contains(l, "msg=stats") && strings.Contains(l, "unparsed_bytes=100") {
				return true
			}
		}
		return false
	})
}
