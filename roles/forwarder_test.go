package roles_test

import (
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/katatrace/katatrace/internal/katatest"
	"github.com/katatrace/katatrace/internal/otlptest"
	"github.com/katatrace/katatrace/internal/testutil"
	"github.com/katatrace/katatrace/sink"
)

// spansOf reads a forwarder's --dump-only output: by trace, by operation.
func spansOf(t *testing.T, out string) (map[string]map[string]sink.SpanRecord, int) {
	t.Helper()
	recs, err := sink.ReadJSONL(strings.NewReader(out))
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]map[string]sink.SpanRecord{}
	for _, r := range recs {
		if m[r.TraceID] == nil {
			m[r.TraceID] = map[string]sink.SpanRecord{}
		}
		m[r.TraceID][r.Operation] = r
	}
	return m, len(recs)
}

// TestForwarderTakesKataStreams: Kata's flags (--socket-path, --dump-only,
// --trace-name), both payload forms at once, every span with its parent,
// attributes and events; what a guest sends that is no span (a frame that
// does not decode, a length no span has) is skipped and counted, while the
// others are served.
func TestForwarderTakesKataStreams(t *testing.T) {
	dir := testutil.SockDir(t)
	hv := filepath.Join(dir, "kata.hvsock")
	p := start(t, nil, "kata-trace-forwarder", "--socket-path", hv, "--dump-only", "--trace-name", "agent-under-test")
	p.WaitLog("listening")
	path := hv + "_10240"

	var wg sync.WaitGroup
	for _, name := range []string{"json-otel017-api", "bincode-otel014-tracing"} {
		wg.Go(func() { katatest.Send(t, path, katatest.Capture(t, name)) })
	}
	huge := binary.BigEndian.AppendUint64(nil, 1<<40)
	garbage := append(binary.BigEndian.AppendUint64(nil, 5), "hello"...)
	for _, bad := range [][]byte{huge, garbage} {
		wg.Go(func() { katatest.Send(t, path, bad) })
	}
	wg.Wait()
	testutil.Eventually(t, 10*time.Second, "12 spans out", func() bool { return strings.Count(p.Stdout.String(), "\n") >= 12 })
	traces, n := spansOf(t, p.Stdout.String())
	spans, tracing := traces["d5549796b885246c67389f3b2fa247d1"], traces["fe1d14f40b91e3a22a78699aab605a60"]
	root, child := spans["root-span"], spans["child-span-0"]
	if n != 12 || len(spans) != 6 || len(tracing) != 6 || root.ParentID != "" || child.ParentID != root.SpanID {
		t.Fatalf("%d spans in %d traces; root %+v; child %+v", n, len(traces), root, child)
	}
	if root.Service != "agent-under-test" || child.Tags["mod"] != "rpc.rs" || child.Tags["ok"] != true || len(child.Logs) != 2 {
		t.Fatalf("child: %+v", child)
	}
	if c := tracing["create_container"]; c.ParentID != tracing["root-span"].SpanID || c.Tags["busy_ns"] == nil {
		t.Fatalf("bincode child without its parent or attributes: %+v", c)
	}
	if g, _ := root.Process["katatrace.guest"].(string); !strings.HasPrefix(g, "unix://"+path) {
		t.Fatalf("the guest is not named on the process: %v", root.Process)
	}
	p.Signal(os.Interrupt)
	if code := p.Wait(10 * time.Second); code != 0 {
		t.Fatalf("exit %d\n%s", code, p.Stderr.String())
	}
	if errs := p.Stderr.String(); !strings.Contains(errs, "undecodable=1") || !strings.Contains(errs, "resyncs=1") ||
		!strings.Contains(errs, `first_bytes=68656c6c6f`) || strings.Contains(errs, "broke the protocol") {
		t.Fatalf("what was no span was not skipped and counted:\n%s", errs)
	}
}

// TestForwarderFindsVMsByPattern: --socket-path is repeatable and
// comma-separated; a plain path listens at once, as Kata's does; a glob
// serves each VM once its VMM's own socket is there, with no socket in a
// directory that matches the glob but holds another VMM's (a Cloud
// Hypervisor pattern and a Firecracker one over the same directories).
func TestForwarderFindsVMsByPattern(t *testing.T) {
	dir := testutil.SockDir(t)
	plain := filepath.Join(dir, "kata.hvsock")
	p := start(t, nil, "kata-trace-forwarder", "--to", "jsonl", "--socket-path", plain,
		"--socket-path", filepath.Join(dir, "*", "clh.sock")+","+filepath.Join(dir, "*", "root", "kata.hvsock"))
	p.WaitLog("msg=ready")
	if n := strings.Count(p.Stderr.String(), `msg="watching for VMs"`); n != 2 {
		t.Fatalf("%d patterns watched, want 2:\n%s", n, p.Stderr.String())
	}
	katatest.Send(t, plain+"_10240", katatest.Capture(t, "json-otel017-api")) // no VMM's socket there: at once
	testutil.VMMSocket(t, filepath.Join(dir, "clh-vm", "clh.sock"))
	testutil.VMMSocket(t, filepath.Join(dir, "fc-vm", "root", "kata.hvsock"))
	for _, sock := range []string{filepath.Join(dir, "clh-vm", "clh.sock_10240"), filepath.Join(dir, "fc-vm", "root", "kata.hvsock_10240")} {
		testutil.Eventually(t, 10*time.Second, "a listener for "+sock, func() bool { _, err := os.Stat(sock); return err == nil })
	}
	katatest.Send(t, filepath.Join(dir, "clh-vm", "clh.sock_10240"), katatest.Capture(t, "bincode-otel014-api"))
	katatest.Send(t, filepath.Join(dir, "fc-vm", "root", "kata.hvsock_10240"), katatest.Capture(t, "bincode-otel014-tracing"))
	testutil.Eventually(t, 10*time.Second, "18 spans out", func() bool { return strings.Count(p.Stdout.String(), "\n") >= 18 })
	if traces, n := spansOf(t, p.Stdout.String()); n != 18 || len(traces) != 3 {
		t.Fatalf("%d spans in %d traces: %v", n, len(traces), traces)
	}
	if _, err := os.Lstat(filepath.Join(dir, "fc-vm", "clh.sock_10240")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a Cloud Hypervisor socket in a Firecracker VM's directory: %v", err)
	}
}

// TestForwarderNeverClosesAnAgent: on one connection an agent is quiet
// past --hello-timeout, sends a frame that is no span, a frame that stalls
// past --frame-timeout, an oversize span, and a length no span has, then a
// trace: every span of the trace arrives, each skip is counted (SIGUSR1
// says so per agent), and the connection is never closed; without a file
// descriptor store, the stop says at ERROR whose tracing it ends.
func TestForwarderNeverClosesAnAgent(t *testing.T) {
	sock := filepath.Join(testutil.SockDir(t), "clh.sock_10240")
	p := start(t, nil, "kata-trace-forwarder", "--from", "unix://"+sock, "--to", "jsonl",
		"--hello-timeout", "200ms", "--frame-timeout", "300ms", "--max-span-bytes", "64KiB")
	p.WaitLog("no file descriptor store")
	a := katatest.DialAgent(t, sock)
	time.Sleep(500 * time.Millisecond) // past --hello-timeout: an agent sends no hello
	json := katatest.Frames(t, "json-otel017-api")
	a.Send([]byte("this frame is no span"))
	time.Sleep(200 * time.Millisecond) // the forwarder idle when the next frame begins
	stalled := binary.BigEndian.AppendUint64(nil, uint64(len(json[0])))
	a.Write(append(stalled, json[0][:20]...))
	time.Sleep(700 * time.Millisecond) // past --frame-timeout
	a.Write(json[0][20:])
	a.Send(append([]byte(`{"span_context":`), make([]byte, 100<<10)...))
	a.Write(append(binary.BigEndian.AppendUint64(nil, 1<<50), "and then some"...))
	a.Send(json...)
	testutil.Eventually(t, 10*time.Second, "the trace's 6 spans", func() bool { return spanCount(p.Stdout.String(), "d5549796b885246c67389f3b2fa247d1") == 6 })
	a.Check()
	p.Signal(syscall.SIGUSR1)
	p.WaitLog(`msg="stats of one agent"`)
	errs := p.Stderr.String()
	for _, want := range []string{"undecodable=1", "stalled=1", "oversize=1", "resyncs=1", "spans=6"} {
		if !strings.Contains(errs[strings.Index(errs, `msg="stats of one agent"`):], want) {
			t.Errorf("the agent's stats lack %s:\n%s", want, errs)
		}
	}
	p.Signal(syscall.SIGTERM)
	if code := p.Wait(10 * time.Second); code != 0 {
		t.Fatalf("exit %d", code)
	}
	if !regexp.MustCompile(`level=ERROR msg="agent's connection closed as this process stops, not kept for a next one \(no file descriptor store, or it was full\): this VM sends no span again until its agent restarts" role=kata-trace-forwarder peer=\S+ guest="unix://` + regexp.QuoteMeta(sock)).MatchString(p.Stderr.String()) {
		t.Fatalf("the stop did not name the agent whose tracing it ends:\n%s", p.Stderr.String())
	}
}

// TestForwarderNamesTheSandbox: spans an agent sends over a VM's
// hybrid-vsock socket reach the OTLP endpoint with the sandbox ID its
// path holds (as Kata makes it: /run/vc/vm/ID/clh.sock) on their
// resource, under the key Kata's runtime tags its own spans with.
func TestForwarderNamesTheSandbox(t *testing.T) {
	const sid = "3f4a9c0d2b7e41c8a5d6e9f01b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e"
	vm := filepath.Join(testutil.SockDir(t), "vc", "vm", sid)
	if err := os.MkdirAll(vm, 0o750); err != nil {
		t.Fatal(err)
	}
	ep := otlptest.New(t)
	ep.Up.Store(true)
	p := start(t, nil, "kata-trace-forwarder", "--socket-path", filepath.Join(vm, "clh.sock"), "--to", "otlphttp://"+strings.TrimPrefix(ep.URL, "http://"))
	p.WaitLog("listening")
	katatest.Send(t, filepath.Join(vm, "clh.sock_10240"), katatest.Capture(t, "bincode-otel014-tracing"))
	testutil.Eventually(t, 10*time.Second, "6 spans at the endpoint", func() bool { n, _ := ep.Spans(); return n == 6 })
	res := ep.Resources()
	if len(res) == 0 {
		t.Fatal("no resource")
	}
	for _, r := range res {
		if r["sandbox_id"] != sid || r["service.name"] != "kata-agent" {
			t.Fatalf("a resource without the sandbox %s: %v", sid, r)
		}
	}
	if !strings.Contains(p.Stderr.String(), "sandbox="+sid) {
		t.Fatalf("the log does not name the sandbox the spans name:\n%s", p.Stderr.String())
	}
}
