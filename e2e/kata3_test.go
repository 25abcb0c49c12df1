package e2e

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math/big"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/katatrace/katatrace/internal/katatest"
	"github.com/katatrace/katatrace/internal/storetest"
	"github.com/katatrace/katatrace/internal/testutil"
)

// startForwarder runs katatrace kata-trace-forwarder with args.
func startForwarder(t *testing.T, args ...string) *testutil.Proc {
	bin, _ := binaries(t)
	p := testutil.Start(t, nil, bin, append([]string{"kata-trace-forwarder"}, args...)...)
	p.WaitLog("msg=ready")
	return p
}

// stopForwarder stops it once it has read the streams of that many agents
// (a connection still in the listen backlog at the stop is the kernel's,
// and closed with the listener).
func stopForwarder(t *testing.T, p *testutil.Proc, guests int) {
	testutil.Eventually(t, 20*time.Second, fmt.Sprintf("%d guests read to their end", guests), func() bool {
		return strings.Count(p.Stderr.String(), "agent disconnected") >= guests
	})
	p.Signal(syscall.SIGTERM)
	if code := p.Wait(30 * time.Second); code != 0 {
		t.Fatalf("forwarder exit %d:\n%s", code, p.Stderr.String())
	}
}

// checkKataTree checks a captured trace as Jaeger shows it: six spans,
// five children of root-span, the service named, attributes and events
// kept.
func checkKataTree(t *testing.T, spans []Span, service string, api bool) {
	t.Helper()
	if len(spans) != 6 {
		t.Fatalf("%d spans in Jaeger, want 6", len(spans))
	}
	byName := map[string]Span{}
	for _, s := range spans {
		byName[s.OperationName] = s
	}
	root, ok := byName["root-span"]
	if !ok || root.Parent() != "" {
		t.Fatalf("no root span without a parent: %+v", byName)
	}
	for _, s := range spans {
		if s.Process.ServiceName != service {
			t.Errorf("%s: service %q, want %q", s.OperationName, s.Process.ServiceName, service)
		}
		if s.OperationName != "root-span" && s.Parent() != root.SpanID {
			t.Errorf("%s: parent %q, want the root %s", s.OperationName, s.Parent(), root.SpanID)
		}
		if !strings.HasPrefix(fmt.Sprint(s.Process.Tag("katatrace.guest")), "unix://") {
			t.Errorf("%s: the guest is not named: %v", s.OperationName, s.Process.Tags)
		}
	}
	if !api {
		c := byName["create_container"]
		if c.Tag("mod") != "rpc.rs" || c.Tag("busy_ns") == nil || len(c.Logs) != 2 {
			t.Fatalf("create_container: tags %v, %d logs", c.Tags, len(c.Logs))
		}
		return
	}
	c := byName["child-span-0"]
	if c.Tag("mod") != "rpc.rs" || c.Tag("ok") != true || c.Tag("span.kind") != "server" || len(c.Logs) != 2 {
		t.Fatalf("child-span-0: tags %v, %d logs", c.Tags, len(c.Logs))
	}
	if fmt.Sprint(c.Tag("ints")) != "[1,2,0]" || fmt.Sprint(c.Tag("floats")) != "[0.5,1.5]" {
		t.Fatalf("child-span-0's arrays: ints %v floats %v", c.Tag("ints"), c.Tag("floats"))
	}
	var failed int
	for _, s := range spans {
		if s.Tag("error") == true {
			failed++
			if s.Tag("otel.status_description") != "simulated failure" {
				t.Errorf("%s: status message %v", s.OperationName, s.Tag("otel.status_description"))
			}
		}
	}
	if failed != 1 {
		t.Fatalf("%d spans with an error status, want 1", failed)
	}
}

// TestKata3Forwarder: streams that Kata's real exporter wrote, in both
// payload forms, through katatrace kata-trace-forwarder into a real Jaeger
// v2: over OTLP gRPC with Kata's own flags (--socket-path and the
// default-form --otlp-endpoint), over Jaeger's UDP port from a watched
// pattern of VM directories, and a generated trace over OTLP HTTP.
func TestKata3Forwarder(t *testing.T) {
	j := startJaeger(t)
	dir := testutil.SockDir(t)

	t.Run("otlp-grpc with Kata's flags", func(t *testing.T) {
		hv := filepath.Join(dir, "kata.hvsock")
		p := startForwarder(t, "--socket-path", hv, "--otlp-endpoint", fmt.Sprintf("http://127.0.0.1:%d", j.OTLPGRPC))
		katatest.Send(t, hv+"_10240", katatest.Capture(t, "json-otel017-api"))
		katatest.Send(t, hv+"_10240", katatest.Capture(t, "bincode-otel014-api"))
		stopForwarder(t, p, 2)
		checkKataTree(t, j.WaitTrace(t, "d5549796b885246c67389f3b2fa247d1", 6, 20*time.Second), "kata-agent", true)
		checkKataTree(t, j.WaitTrace(t, "a650f4bb0f1338066ba882140dded800", 6, 20*time.Second), "kata-agent", true)
	})

	t.Run("jaeger-udp from a watched pattern", func(t *testing.T) {
		vms := filepath.Join(dir, "vm")
		p := startForwarder(t, "--from", "unix://"+filepath.Join(vms, "*", "clh.sock_10240"), "--to", j.UDPAddr(), "--trace-name", "kata-agent-udp")
		sendToVMs(t, vms, "json-otel017-tracing", "bincode-otel014-tracing")
		stopForwarder(t, p, 2)
		checkKataTree(t, j.WaitTrace(t, "fe1d14f40b91e3a22a78699aab605a60", 6, 20*time.Second), "kata-agent-udp", false)
		jsonTrace := j.WaitTrace(t, jsonTracingTraceID(t), 6, 20*time.Second)
		if len(jsonTrace) != 6 {
			t.Fatalf("the JSON capture: %d spans", len(jsonTrace))
		}
	})

	t.Run("otlp-http generated", func(t *testing.T) {
		sock := filepath.Join(dir, "gen.sock_10240")
		p := startForwarder(t, "--from", "unix://"+sock, "--to", j.OTLPHTTPAddr())
		trace, stream := katatest.GeneratedTrace(200)
		katatest.Send(t, sock, stream)
		stopForwarder(t, p, 1)
		spans := j.WaitTrace(t, trace, 201, 20*time.Second)
		if len(spans) != 201 {
			t.Fatalf("%d spans of 201", len(spans))
		}
		var root string
		for _, s := range spans {
			if s.OperationName == "root" {
				root = s.SpanID
			}
		}
		for _, s := range spans {
			if s.OperationName != "root" && (s.Parent() != root || s.Tag("n") == nil || len(s.Logs) != 1) {
				t.Fatalf("%s: parent %s (root %s), tags %v", s.OperationName, s.Parent(), root, s.Tags)
			}
		}
	})
}

// jsonTracingTraceID reads the trace id of the JSON tracing capture's
// first frame.
func jsonTracingTraceID(t *testing.T) string {
	b := katatest.Capture(t, "json-otel017-tracing")
	n := binary.BigEndian.Uint64(b)
	var s struct {
		SpanContext struct {
			TraceID json.Number `json:"trace_id"`
		} `json:"span_context"`
	}
	dec := json.NewDecoder(strings.NewReader(string(b[8 : 8+n])))
	dec.UseNumber()
	if err := dec.Decode(&s); err != nil {
		t.Fatal(err)
	}
	v, _ := new(big.Int).SetString(string(s.SpanContext.TraceID), 10)
	return fmt.Sprintf("%032x", v)
}

// TestKata3AgentsKeepTheirConnection: the four ways a Kata 2.x+ agent's
// tracing used to end, each an agent on its one connection replaying the
// frames Kata's exporter wrote, into a real Jaeger over OTLP with Kata's
// flags: a bincode trace whose trace id begins with '{', a frame that is
// no span before a JSON trace, the forwarder restarted between frames, and
// the forwarder SIGKILLed between frames (its unit's file descriptor store
// played by storetest; systemd's own in the VM suite). Every trace
// arrives whole, and no agent's write fails. The table it logs is the
// issue's; KATATRACE_BIN of an older build fills it in for that build.
func TestKata3AgentsKeepTheirConnection(t *testing.T) {
	j := startJaeger(t)
	bin, _ := binaries(t)
	restartedID := jsonTracingTraceID(t)
	cases := []struct {
		name, trace string
		api         bool
		run         func(f *unitForwarder) *katatest.Agent
	}{
		{"a bincode trace whose trace id's first byte is '{'", "a650f4bb0f1338066ba882140dded87b", true, func(f *unitForwarder) *katatest.Agent {
			a := f.agent()
			a.Send(katatest.WithFirstByte(katatest.Frames(t, "bincode-otel014-api"), '{')...)
			return a
		}},
		{"a frame that is no span, then a JSON trace", "d5549796b885246c67389f3b2fa247d1", true, func(f *unitForwarder) *katatest.Agent {
			a := f.agent()
			a.Send([]byte("this frame is no span"))
			a.Send(katatest.Frames(t, "json-otel017-api")...)
			return a
		}},
		{"3 frames, the forwarder restarted, 3 more", restartedID, false, func(f *unitForwarder) *katatest.Agent {
			a, frames := f.agent(), katatest.Frames(t, "json-otel017-tracing")
			a.Send(frames[:3]...)
			f.delivered(restartedID, 3)
			f.p.Signal(syscall.SIGTERM)
			f.p.Wait(20 * time.Second)
			f.start()
			a.Send(frames[3:]...)
			return a
		}},
		{"3 frames, the forwarder SIGKILLed and started again, 3 more", "fe1d14f40b91e3a22a78699aab605a60", false, func(f *unitForwarder) *katatest.Agent {
			a, frames := f.agent(), katatest.Frames(t, "bincode-otel014-tracing")
			a.Send(frames[:3]...)
			f.delivered("fe1d14f40b91e3a22a78699aab605a60", 3) // a crash may lose what the sink held
			f.p.Signal(syscall.SIGKILL)
			f.p.Wait(20 * time.Second)
			f.start()
			a.Send(frames[3:]...)
			return a
		}},
	}
	var table strings.Builder
	fmt.Fprintf(&table, "%-62s %-16s %s\n", "case", "spans in Jaeger", "the agent's connection")
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := &unitForwarder{t: t, j: j, bin: bin, m: storetest.New(t), hv: filepath.Join(testutil.SockDir(t), "clh.sock")}
			f.start()
			a := c.run(f)
			spans := j.WaitTrace(t, c.trace, 6, 20*time.Second)
			werr, closed := a.Failed()
			conn := "open, every write taken"
			switch {
			case werr != nil:
				conn = "a write failed: " + werr.Error()
			case closed:
				conn = "closed by the host"
			}
			fmt.Fprintf(&table, "%-62s %d of 6           %s\n", c.name, len(spans), conn)
			checkKataTree(t, spans, "kata-agent", c.api)
			a.Check()
			f.p.Signal(syscall.SIGTERM)
			if code := f.p.Wait(20 * time.Second); code != 0 {
				t.Fatalf("forwarder exit %d:\n%s", code, f.p.Stderr.String())
			}
		})
	}
	t.Logf("Kata agents' connections, %s:\n%s", bin, table.String())
}

// unitForwarder is kata-trace-forwarder run as a unit with a file
// descriptor store would run it, with Kata's flags, into Jaeger.
type unitForwarder struct {
	t   *testing.T
	j   *Jaeger
	bin string
	m   *storetest.Manager
	hv  string
	p   *testutil.Proc
}

func (f *unitForwarder) start() {
	f.p = f.m.Start(nil, f.bin, "kata-trace-forwarder", "--socket-path", f.hv, "--otlp-endpoint", fmt.Sprintf("http://127.0.0.1:%d", f.j.OTLPGRPC))
	f.m.WaitReady(f.p)
}

func (f *unitForwarder) agent() *katatest.Agent { return katatest.DialAgent(f.t, f.hv+"_10240") }

// delivered waits for n spans of trace in Jaeger.
func (f *unitForwarder) delivered(trace string, n int) {
	if spans := f.j.WaitTrace(f.t, trace, n, 20*time.Second); len(spans) < n {
		f.t.Fatalf("trace %s: %d spans before the stop, want %d", trace, len(spans), n)
	}
}

// sendToVMs makes a Cloud Hypervisor VM's directory under vms for each
// capture (sandbox-0, sandbox-1, …), its VMM's socket in it, and sends the
// capture's frames through the VM's clh.sock_10240 as its agent would.
func sendToVMs(t *testing.T, vms string, captures ...string) {
	t.Helper()
	for i, name := range captures {
		vm := filepath.Join(vms, fmt.Sprintf("sandbox-%d", i))
		testutil.VMMSocket(t, filepath.Join(vm, "clh.sock"))
		katatest.Send(t, filepath.Join(vm, "clh.sock_10240"), katatest.Capture(t, name))
	}
}
