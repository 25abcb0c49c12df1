package roles_test

import (
	"encoding/binary"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/katatrace/katatrace/internal/katatest"
	"github.com/katatrace/katatrace/internal/otlptest"
	"github.com/katatrace/katatrace/internal/storetest"
	"github.com/katatrace/katatrace/internal/testutil"
)

// spanCount counts the JSON lines a forwarder wrote for trace.
func spanCount(out, trace string) int { return strings.Count(out, `"trace_id":"`+trace+`"`) }

// TestForwarderKeepsAgentsAcrossRestartsAndCrashes: under a file
// descriptor store, a Kata agent's one connection outlives the
// forwarder's restart (SIGTERM: nothing lost), its SIGKILL between frames
// (nothing lost), and its SIGKILL in the middle of a frame (that span
// lost, the next frames found); the agent never sees a failed write.
func TestForwarderKeepsAgentsAcrossRestartsAndCrashes(t *testing.T) {
	m := storetest.New(t)
	sock := filepath.Join(testutil.SockDir(t), "clh.sock_10240")
	args := []string{"--from", "unix://" + sock, "--to", "jsonl", "--drain-timeout", "5s"}
	run := func() *testutil.Proc {
		p := m.Start([]string{"KATATRACE_TEST_AS_MAIN=1"}, bin(t, "kata-trace-forwarder"), args...)
		m.WaitReady(p)
		return p
	}
	const api, tracing = "d5549796b885246c67389f3b2fa247d1", "a650f4bb0f1338066ba882140dded800"
	const lateTrace, late2Trace = "d8f1cfaf7c547e1e548ec7dd972789eb", "fe1d14f40b91e3a22a78699aab605a60"
	json, bin := katatest.Frames(t, "json-otel017-api"), katatest.Frames(t, "bincode-otel014-api")

	p := run()
	a := katatest.DialAgent(t, sock)
	a.Send(json[:3]...)
	testutil.Eventually(t, 10*time.Second, "3 spans", func() bool { return spanCount(p.Stdout.String(), api) == 3 })

	// A restart: the connection and everything read go to the next process.
	p.Signal(syscall.SIGTERM)
	if code := p.Wait(10 * time.Second); code != 0 {
		t.Fatalf("exit %d:\n%s", code, p.Stderr.String())
	}
	if !strings.Contains(p.Stderr.String(), `msg="handed over to the next process (a stop of the unit, not a restart, ends these connections)" role=kata-trace-forwarder connections=1 guests="unix://`) {
		t.Fatalf("no handover:\n%s\nstore:\n%s", p.Stderr.String(), m)
	}
	// An agent that starts while no process runs waits in the kept
	// listener's backlog: its connection and first export go through.
	late := katatest.DialAgent(t, sock)
	late.Send(katatest.Frames(t, "json-otel017-tracing")...)
	p = run()
	a.Send(json[3:]...)
	testutil.Eventually(t, 10*time.Second, "the trace's last 3 spans", func() bool { return spanCount(p.Stdout.String(), api) == 3 })
	testutil.Eventually(t, 10*time.Second, "the late agent's trace", func() bool { return spanCount(p.Stdout.String(), lateTrace) == 6 })
	late.Check()
	a.Check()
	p.WaitLog("connection taken up after a restart")

	// A crash between frames: nothing was held; an agent that starts
	// meanwhile waits in the backlog.
	p.Signal(syscall.SIGKILL)
	p.Wait(10 * time.Second)
	late2 := katatest.DialAgent(t, sock)
	late2.Send(katatest.Frames(t, "bincode-otel014-tracing")...)
	p = run()
	testutil.Eventually(t, 10*time.Second, "the second late agent's trace", func() bool { return spanCount(p.Stdout.String(), late2Trace) == 6 })
	late2.Check()
	a.Send(bin[:2]...)
	testutil.Eventually(t, 10*time.Second, "2 spans after the crash", func() bool { return spanCount(p.Stdout.String(), tracing) == 2 })
	a.Check()
	p.WaitLog("taken up after a crash")

	// A crash inside a frame: what the process had read of it is lost, and
	// the next process finds the frame after it.
	a.Write(binary.BigEndian.AppendUint64(nil, uint64(len(bin[2]))))
	a.Write(bin[2][:40])
	a.WaitRead() // read by the process, held in its buffer
	p.Signal(syscall.SIGKILL)
	p.Wait(10 * time.Second)
	p = run()
	a.Write(bin[2][40:])
	a.Send(bin[3:]...)
	testutil.Eventually(t, 10*time.Second, "the frames after the cut one", func() bool { return spanCount(p.Stdout.String(), tracing) == 3 })
	p.Signal(syscall.SIGTERM)
	if code := p.Wait(10 * time.Second); code != 0 {
		t.Fatalf("exit %d:\n%s", code, p.Stderr.String())
	}
	// Three agents taken up after the crash: each stream looked for its
	// next frame; the cut one skipped what was left of it.
	if errs := p.Stderr.String(); !strings.Contains(errs, "resyncs=3") || !strings.Contains(errs, "frames=3 spans=3") {
		t.Fatalf("the cut frame was not skipped and counted:\n%s", errs)
	}
	a.Send(bin[5])
	a.Check() // kept by the last handover
}

// TestForwarderHandsOverWhatTheSinkHolds: the OTLP endpoint is down when
// the forwarder restarts: what its sink held goes to the next process in
// the store's state, and reaches the endpoint once it is back, each span
// once.
func TestForwarderHandsOverWhatTheSinkHolds(t *testing.T) {
	ep := otlptest.New(t)
	m := storetest.New(t)
	sock := filepath.Join(testutil.SockDir(t), "clh.sock_10240")
	port := testutil.FreePort(t, "tcp")
	run := func() *testutil.Proc {
		p := m.Start([]string{"KATATRACE_TEST_AS_MAIN=1"}, bin(t, "kata-trace-forwarder"), "--from", "unix://"+sock,
			"--to", "otlphttp://"+strings.TrimPrefix(ep.URL, "http://"), "--metrics-listen", fmt.Sprintf("tcp://127.0.0.1:%d", port))
		m.WaitReady(p)
		return p
	}
	p := run()
	a := katatest.DialAgent(t, sock)
	frames := katatest.Frames(t, "json-otel017-api")
	a.Send(frames...)
	testutil.Eventually(t, 10*time.Second, "6 spans held for the endpoint", func() bool {
		return scrape(t, port, "katatrace_forwarder_spans_total") == len(frames) && scrape(t, port, "katatrace_sink_in_flight_requests") > 0
	})
	p.Signal(syscall.SIGTERM)
	if code := p.Wait(10 * time.Second); code != 0 || !strings.Contains(p.Stderr.String(), "held_batches=6") {
		t.Fatalf("exit %d, without the held batches handed over:\n%s", code, p.Stderr.String())
	}
	ep.Up.Store(true)
	p = run()
	p.WaitLog("took up what the previous process kept after a restart")
	testutil.Eventually(t, 10*time.Second, "6 spans at the endpoint", func() bool { got, _ := ep.Spans(); return got == len(frames) })
	time.Sleep(200 * time.Millisecond) // a second copy, if any, arrives too
	if _, twice := ep.Spans(); twice != 0 {
		t.Errorf("%d spans delivered twice", twice)
	}
	a.Check()
}

// TestForwarderWithoutStoreAfterOne: a process that keeps no store
// (FDSTORE=0) after one that did still takes up its connections and
// listener, and takes the handed state out of the store, so that a later
// process never applies it to streams read on since.
func TestForwarderWithoutStoreAfterOne(t *testing.T) {
	m := storetest.New(t)
	sock := filepath.Join(testutil.SockDir(t), "clh.sock_10240")
	run := func(env ...string) *testutil.Proc {
		p := m.Start(append([]string{"KATATRACE_TEST_AS_MAIN=1"}, env...), bin(t, "kata-trace-forwarder"), "--from", "unix://"+sock, "--to", "jsonl")
		m.WaitReady(p)
		return p
	}
	p := run()
	a := katatest.DialAgent(t, sock)
	frames := katatest.Frames(t, "json-otel017-api")
	a.Send(frames[:3]...)
	testutil.Eventually(t, 10*time.Second, "3 spans", func() bool { return spanCount(p.Stdout.String(), "d5549796b885246c67389f3b2fa247d1") == 3 })
	p.Signal(syscall.SIGTERM)
	p.Wait(10 * time.Second)
	p = run("FDSTORE=0")
	p.WaitLog("this one keeps none")
	a.Send(frames[3:]...)
	testutil.Eventually(t, 10*time.Second, "the rest of the trace", func() bool { return spanCount(p.Stdout.String(), "d5549796b885246c67389f3b2fa247d1") == 3 })
	late := katatest.DialAgent(t, sock) // the kept listener serves on
	late.Send(katatest.Frames(t, "bincode-otel014-api")...)
	testutil.Eventually(t, 10*time.Second, "a new agent's trace", func() bool { return spanCount(p.Stdout.String(), "a650f4bb0f1338066ba882140dded800") == 6 })
	if slices.Contains(m.Names(), "kt-state") {
		t.Fatalf("the handed state is still in the store: %v", m.Names())
	}
	a.Check()
}
