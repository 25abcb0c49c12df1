package roles_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/katatrace/katatrace/handover"
	"github.com/katatrace/katatrace/internal/katatest"
	"github.com/katatrace/katatrace/internal/otlptest"
	"github.com/katatrace/katatrace/internal/testutil"
)

// status is what GET path answers on a metrics port, 0 when nothing does.
func status(port int, path string) int {
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get(fmt.Sprintf("http://127.0.0.1:%d%s", port, path))
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// node is one node of a rollout: the test's OTLP endpoint, a fixed
// hybrid-vsock socket agents connect to, and the handover socket.
type node struct {
	t                *testing.T
	ep               *otlptest.Endpoint
	dir, fixed, sock string
}

func newNode(t *testing.T) *node {
	dir := testutil.SockDir(t)
	return &node{t: t, ep: otlptest.New(t), dir: dir,
		fixed: filepath.Join(dir, "clh.sock_10240"), sock: filepath.Join(dir, "run", "kata-trace-forwarder.sock")}
}

// run starts a forwarder on the node, its metrics on port, with extra
// flags.
func (n *node) run(port int, extra ...string) *testutil.Proc {
	args := append([]string{"--from", "unix://" + n.fixed, "--to", "otlphttp://" + strings.TrimPrefix(n.ep.URL, "http://"),
		"--handover-socket", n.sock, "--metrics-listen", fmt.Sprintf("tcp://127.0.0.1:%d", port)}, extra...)
	return testutil.Start(n.t, []string{"KATATRACE_TEST_AS_MAIN=1"}, bin(n.t, "kata-trace-forwarder"), args...)
}

// start runs one on a free port and waits until it serves (its log: the
// endpoint may be down).
func (n *node) start(extra ...string) (*testutil.Proc, int) {
	port := testutil.FreePort(n.t, "tcp")
	p := n.run(port, extra...)
	p.WaitLog("msg=ready ")
	return p, port
}

// spans is how many spans the endpoint took, each once.
func (n *node) spans() int { got, _ := n.ep.Spans(); return got }

// take is a successor taking everything from the process at the
// handover socket, as the test's.
func (n *node) take() *handover.Taken {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	taken, err := handover.Take(ctx, n.sock, "kata-trace-forwarder")
	if err != nil || taken == nil {
		n.t.Fatalf("take: %v, %v", taken, err)
	}
	return taken
}

// TestForwarderRolloutHandsOverEveryAgent is a DaemonSet's rollout with
// maxSurge 1, twice over: a new forwarder starts beside the running one
// with the same --handover-socket, and takes its listeners (a fixed
// hybrid-vsock path and a watched VM's), its agents' connections (one in
// the middle of a frame) and its queued batches (the endpoint down); the
// old one then serves nothing, answers 503 on /readyz and 200 on
// /healthz until its SIGTERM, and exits at once. Every span reaches the
// endpoint once, no agent sees a failed write, and a new agent connects
// to whichever process serves. The last one, stopped with no successor,
// drains, and says the agents' connections end.
func TestForwarderRolloutHandsOverEveryAgent(t *testing.T) {
	n := newNode(t)
	ep, fixed := n.ep, n.fixed
	vmm := filepath.Join(n.dir, "vm", "a", "root", "kata.hvsock")
	testutil.VMMSocket(t, vmm)
	start := func() (*testutil.Proc, int) {
		return n.start("--from", "unix://"+filepath.Join(n.dir, "vm", "*", "root", "kata.hvsock_10240"))
	}
	api, tracing := katatest.Frames(t, "json-otel017-api"), katatest.Frames(t, "bincode-otel014-api")
	want := len(api) + len(tracing)

	old, oldPort := start()
	if !strings.Contains(old.Stderr.String(), "no process waits at the handover socket: starting afresh") {
		t.Fatalf("the first process did not say it starts afresh:\n%s", old.Stderr.String())
	}
	a := katatest.DialAgent(t, fixed)
	b := katatest.DialAgent(t, vmm+"_10240")
	a.Send(api[:3]...)
	b.Send(tracing[:2]...)
	testutil.Eventually(t, 10*time.Second, "5 spans read", func() bool {
		return scrape(t, oldPort, "katatrace_forwarder_spans_total") == 5
	})
	// The endpoint down: the process holds the node's guests all the
	// same, and says it is ready (a DaemonSet's controller would delete
	// an old pod that is not, and its agents with it).
	testutil.Eventually(t, 10*time.Second, "the sink's endpoint seen down", func() bool {
		return scrape(t, oldPort, "katatrace_sink_retries_total") > 0
	})
	if code, body := readyz(t, oldPort); code != http.StatusOK {
		t.Errorf("/readyz with the endpoint down under --handover-socket: %d %q, want 200", code, body)
	}
	// Half a frame, read and held by the old process.
	a.Write(binary.BigEndian.AppendUint64(nil, uint64(len(api[3]))))
	a.Write(api[3][:40])
	a.WaitRead()

	// The new pod: it takes everything; the old one waits for its stop.
	cur, curPort := start()
	cur.WaitLog("took over from the process at the handover socket")
	cur.WaitLog("took up what the previous process kept after a restart")
	old.WaitLog("handed over: this process serves nothing now")
	if code, body := readyz(t, oldPort); code != http.StatusServiceUnavailable || !strings.Contains(body, "handed over") {
		t.Errorf("the old process's /readyz answers %d %q after the handover, want 503 saying it handed over", code, body)
	}
	if got := status(oldPort, "/healthz"); got != http.StatusOK {
		t.Errorf("the old process's /healthz answers %d after the handover, want 200 (a failed liveness probe restarts it)", got)
	}
	select {
	case <-old.Done():
		t.Fatalf("the old process exited after handing over: the kubelet would restart it\n%s", old.Stderr.String())
	case <-time.After(300 * time.Millisecond):
	}

	ep.Up.Store(true)
	a.Write(api[3][40:])
	a.Send(api[4:]...)
	b.Send(tracing[2:4]...)
	late := katatest.DialAgent(t, fixed) // served by the new process
	late.Send(katatest.Frames(t, "json-otel017-tracing")...)
	testutil.Eventually(t, 10*time.Second, "the agents' spans at the endpoint", func() bool {
		got, _ := ep.Spans()
		return got == len(api)+4+6
	})
	old.Signal(syscall.SIGTERM)
	if code := old.Wait(10 * time.Second); code != 0 {
		t.Fatalf("the old process exited %d:\n%s", code, old.Stderr.String())
	}

	// A second rollout, from the process that took over.
	next, _ := start()
	next.WaitLog("took over from the process at the handover socket")
	cur.WaitLog("handed over: this process serves nothing now")
	if got := status(curPort, "/readyz"); got != http.StatusServiceUnavailable {
		t.Errorf("/readyz answers %d after the second handover, want 503", got)
	}
	cur.Signal(syscall.SIGTERM)
	if code := cur.Wait(10 * time.Second); code != 0 {
		t.Fatalf("exit %d:\n%s", code, cur.Stderr.String())
	}
	b.Send(tracing[4:]...)
	testutil.Eventually(t, 10*time.Second, "every span at the endpoint", func() bool {
		got, _ := ep.Spans()
		return got == want+6
	})
	time.Sleep(200 * time.Millisecond) // a second copy, if any, arrives too
	if _, twice := ep.Spans(); twice != 0 {
		t.Errorf("%d spans delivered twice", twice)
	}
	a.Check()
	b.Check()
	late.Check()

	// No successor: the stop drains, and says what ends.
	next.Signal(syscall.SIGTERM)
	if code := next.Wait(10 * time.Second); code != 0 {
		t.Fatalf("exit %d:\n%s", code, next.Stderr.String())
	}
	if errs := next.Stderr.String(); !strings.Contains(errs, "agent's connection closed as this process stops") {
		t.Errorf("a stop without a successor did not say the agents' connections end:\n%s", errs)
	}
	if _, closed := a.Failed(); !closed {
		t.Errorf("the agent's connection is still open after the last process stopped")
	}
}

// TestHandoverSocketRefusesAnotherRole: a process of another role asking
// at the socket is refused, says why and does not start; the process
// there keeps serving, and its agent loses nothing.
func TestHandoverSocketRefusesAnotherRole(t *testing.T) {
	dir := testutil.SockDir(t)
	sock := filepath.Join(dir, "clh.sock_10240")
	handover := filepath.Join(dir, "handover.sock")
	port := testutil.FreePort(t, "tcp")
	p := testutil.Start(t, []string{"KATATRACE_TEST_AS_MAIN=1"}, bin(t, "kata-trace-forwarder"),
		"--from", "unix://"+sock, "--to", "jsonl", "--handover-socket", handover,
		"--metrics-listen", fmt.Sprintf("tcp://127.0.0.1:%d", port))
	testutil.Eventually(t, 20*time.Second, "the forwarder ready", func() bool { return status(port, "/readyz") == http.StatusOK })
	a := katatest.DialAgent(t, sock)
	frames := katatest.Frames(t, "json-otel017-api")
	a.Send(frames[:2]...)

	other := testutil.Start(t, []string{"KATATRACE_TEST_AS_MAIN=1"}, bin(t, "vsock-to-text-server"),
		"--from", "unix://"+filepath.Join(dir, "text.sock"), "--handover-socket", handover)
	if code := other.Wait(20 * time.Second); code == 0 {
		t.Fatalf("a process of another role started at the same handover socket:\n%s", other.Stderr.String())
	}
	if errs := other.Stderr.String(); !strings.Contains(errs, "this process is a kata-trace-forwarder, not a vsock-to-text-server: give each role a socket of its own") {
		t.Errorf("the refusal does not say why:\n%s", errs)
	}
	p.WaitLog("handover refused")
	a.Send(frames[2:]...)
	const api = "d5549796b885246c67389f3b2fa247d1"
	testutil.Eventually(t, 10*time.Second, "every span", func() bool { return spanCount(p.Stdout.String(), api) == len(frames) })
	if got := status(port, "/readyz"); got != http.StatusOK {
		t.Errorf("/readyz answers %d after a refused handover, want 200", got)
	}
	a.Check()
}

// TestForwarderRolloutUnderLoad: agents stream spans without a pause,
// in writes that cut frames anywhere, while the forwarder is rolled over
// three times (each new process started beside the old, the old then
// stopped): every span reaches the endpoint once, and no agent's write
// fails.
func TestForwarderRolloutUnderLoad(t *testing.T) {
	n := newNode(t)
	n.ep.Up.Store(true)
	ep, fixed := n.ep, n.fixed
	start := func() *testutil.Proc { p, _ := n.start(); return p }
	const agents, spans = 4, 400
	cur := start()
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		failed  []error
		stopped = make(chan struct{})
	)
	var sent atomic.Int64
	for i := range agents {
		c, err := net.Dial("unix", fixed)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(i), 1))
			// Trace after trace until the rollouts are done: every
			// handover cuts streams in flight.
			for {
				select {
				case <-stopped:
					return
				default:
				}
				_, stream := katatest.GeneratedTrace(spans - 1)
				for len(stream) > 0 {
					n := min(len(stream), 1+r.IntN(700)) // anywhere in a frame
					if _, err := c.Write(stream[:n]); err != nil {
						mu.Lock()
						failed = append(failed, fmt.Errorf("agent %d: %w", i, err))
						mu.Unlock()
						return
					}
					stream = stream[n:]
					time.Sleep(time.Duration(r.IntN(3)) * time.Millisecond)
				}
				sent.Add(spans)
			}
		}()
	}
	for range 3 {
		next := start()
		next.WaitLog("took over from the process at the handover socket")
		cur.WaitLog("handed over: this process serves nothing now")
		cur.Signal(syscall.SIGTERM)
		if code := cur.Wait(10 * time.Second); code != 0 {
			t.Fatalf("exit %d:\n%s", code, cur.Stderr.String())
		}
		cur = next
	}
	close(stopped)
	wg.Wait()
	if len(failed) > 0 {
		t.Fatalf("agents' writes failed: %v", failed)
	}
	testutil.Eventually(t, 20*time.Second, "every span at the endpoint", func() bool {
		got, _ := ep.Spans()
		return got == int(sent.Load())
	})

	time.Sleep(200 * time.Millisecond) // a second copy, if any, arrives too
	if _, twice := ep.Spans(); twice != 0 {
		t.Errorf("%d spans delivered twice", twice)
	}
}

// TestRolloutSurvivesAFailedSuccessor: a new process that takes
// everything and then fails to start (its metrics port taken) serves
// none of it, and the old one, which kept its copies until a successor
// says it serves them, gives it all to the next: the agent's connection
// and its trace go on.
func TestRolloutSurvivesAFailedSuccessor(t *testing.T) {
	n := newNode(t)
	n.ep.Up.Store(true)
	ep, fixed, start := n.ep, n.fixed, n.run
	old, oldPort := n.start()
	a := katatest.DialAgent(t, fixed)
	frames := katatest.Frames(t, "json-otel017-api")
	a.Send(frames[:3]...)
	testutil.Eventually(t, 10*time.Second, "3 spans", func() bool { got, _ := ep.Spans(); return got == 3 })

	failed := start(oldPort) // its metrics port is the old one's
	if code := failed.Wait(20 * time.Second); code == 0 {
		t.Fatalf("a successor whose metrics port is taken started:\n%s", failed.Stderr.String())
	}
	for _, want := range []string{"took over from the process at the handover socket", "stopped before serving what it took"} {
		if !strings.Contains(failed.Stderr.String(), want) {
			t.Fatalf("the failed successor did not say %q:\n%s", want, failed.Stderr.String())
		}
	}
	old.WaitLog("handover to a successor failed; the next that asks gets everything")

	next := start(testutil.FreePort(t, "tcp"))
	next.WaitLog("took over from the process at the handover socket")
	next.WaitLog("msg=ready ")
	old.WaitLog("handed over: this process serves nothing now")
	a.Send(frames[3:]...)
	testutil.Eventually(t, 10*time.Second, "the trace's every span", func() bool { got, _ := ep.Spans(); return got == len(frames) })
	a.Check()
	old.Signal(syscall.SIGTERM)
	if code := old.Wait(10 * time.Second); code != 0 {
		t.Fatalf("exit %d:\n%s", code, old.Stderr.String())
	}
	next.Signal(syscall.SIGTERM)
	next.Wait(10 * time.Second)
}

// TestRolloutAfterASuccessorThatReadAndLeft: a successor takes
// everything, reads half a frame of an agent's stream, and goes away
// without serving. The old process held everything meanwhile (and stayed
// ready: a DaemonSet's controller deletes an old pod that is not), and
// gives it to the next successor with the streams' state dropped: that
// one finds the agent's next frame, and only the frame the first one cut
// is lost.
func TestRolloutAfterASuccessorThatReadAndLeft(t *testing.T) {
	n := newNode(t)
	n.ep.Up.Store(true)
	old, oldPort := n.start()
	a := katatest.DialAgent(t, n.fixed)
	frames := katatest.Frames(t, "bincode-otel014-api")
	a.Send(frames[:2]...)
	testutil.Eventually(t, 10*time.Second, "2 spans", func() bool { return n.spans() == 2 })

	taken := n.take()
	if code, body := readyz(t, oldPort); code != http.StatusOK {
		t.Errorf("the old process's /readyz answers %d %q before its successor serves, want 200 (it holds everything)", code, body)
	}
	var err error
	var agent net.Conn
	for name, f := range taken.Files {
		if strings.HasPrefix(name, "kt-m.") {
			if agent, err = net.FileConn(f); err != nil {
				t.Fatal(err)
			}
		}
		f.Close()
	}
	if agent == nil {
		t.Fatalf("no agent's connection among %d descriptors", len(taken.Files))
	}
	a.Write(binary.BigEndian.AppendUint64(nil, uint64(len(frames[2]))))
	a.Write(frames[2][:40])
	if _, err := io.ReadFull(agent, make([]byte, 8+20)); err != nil { // half a frame, gone with this successor
		t.Fatal(err)
	}
	agent.Close()
	taken.Abandon()
	old.WaitLog("a successor went away with everything")

	next, _ := n.start()
	next.WaitLog("took over from the process at the handover socket")
	a.Write(frames[2][40:])
	a.Send(frames[3:]...)
	testutil.Eventually(t, 10*time.Second, "the frames after the cut one", func() bool { return n.spans() == 2+len(frames[3:]) })
	a.Check()
	next.WaitLog("connection taken up after a crash: looking for the next frame")
}

// TestRolloutOldServesAgainWithoutSuccessor: a successor takes
// everything and goes away without serving, and no other asks within
// --handover-resume: the old process executes itself anew, with its
// kept sockets, and serves the agent again (same pid: the container goes
// on); a later rollout hands over from it as from any.
func TestRolloutOldServesAgainWithoutSuccessor(t *testing.T) {
	n := newNode(t)
	n.ep.Up.Store(true)
	ep, fixed := n.ep, n.fixed
	start := func() *testutil.Proc { p, _ := n.start("--handover-resume", "500ms"); return p }
	old := start()
	a := katatest.DialAgent(t, fixed)
	frames := katatest.Frames(t, "json-otel017-api")
	a.Send(frames[:2]...)
	testutil.Eventually(t, 10*time.Second, "2 spans", func() bool { got, _ := ep.Spans(); return got == 2 })

	taken := n.take()
	for _, f := range taken.Files {
		f.Close()
	}
	taken.Abandon()
	old.WaitLog("serving again what this process kept: no successor served it")
	testutil.Eventually(t, 10*time.Second, "ready again", func() bool { return strings.Count(old.Stderr.String(), "msg=ready ") == 2 })
	a.Send(frames[2:4]...)
	testutil.Eventually(t, 10*time.Second, "4 spans", func() bool { got, _ := ep.Spans(); return got == 4 })

	next := start()
	next.WaitLog("took over from the process at the handover socket")
	old.WaitLog("handed over: this process serves nothing now")
	a.Send(frames[4:]...)
	testutil.Eventually(t, 10*time.Second, "every span", func() bool { got, _ := ep.Spans(); return got == len(frames) })
	a.Check()
	old.Signal(syscall.SIGTERM)
	if code := old.Wait(10 * time.Second); code != 0 {
		t.Fatalf("exit %d:\n%s", code, old.Stderr.String())
	}
}
