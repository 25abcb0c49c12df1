package roles_test

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/katatrace/katatrace/internal/testhost"
	"github.com/katatrace/katatrace/internal/testutil"
	"github.com/katatrace/katatrace/sink"
)

// startShimHost is the host relay the shim's guest relay reaches.
func startShimHost(t *testing.T) *testhost.Host {
	return testhost.Start(t, []string{"KATATRACE_TEST_AS_MAIN=1"}, bin(t, "vsock-to-udp-server"), "kata.hvsock_6831")
}

func byService(recs []sink.SpanRecord, service string) map[string][]sink.SpanRecord {
	m := map[string][]sink.SpanRecord{}
	for _, r := range recs {
		if r.Service == service {
			m[r.Operation] = append(m[r.Operation], r)
		}
	}
	return m
}

func cmdlineFile(t *testing.T, s string) string {
	p := filepath.Join(t.TempDir(), "cmdline")
	if err := os.WriteFile(p, []byte(s+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// shimArgs are the shim's arguments, relaying to h from a free UDP port.
func shimArgs(t *testing.T, h *testhost.Host, cmdline string, agentArgs ...string) []string {
	args := []string{"--cmdline-file", cmdlineFile(t, cmdline), "--to", "unix://" + h.Sock,
		"--from", fmt.Sprintf("udp://127.0.0.1:%d", testutil.FreePort(t, "udp")), "--flush-timeout", "10s", "--"}
	return append(append(args, bin(t, "katatrace-test-agent")), agentArgs...)
}

// checkShimTrace checks the shim's five spans, one trace, under one root.
func checkShimTrace(t *testing.T, recs []sink.SpanRecord) (root sink.SpanRecord) {
	t.Helper()
	shim := byService(recs, "kata-agent")
	if len(shim["kata-agent"]) != 1 {
		t.Fatalf("%d root spans kata-agent, want 1: %v", len(shim["kata-agent"]), shim)
	}
	root = shim["kata-agent"][0]
	if root.ParentID != "" || root.Tags["root-span"] != true || root.Tags["source"] != "agent" || root.Tags["trace-mode"] != "static" {
		t.Fatalf("root span %+v", root)
	}
	for _, op := range []string{"boot", "agent-start", "agent-run", "shutdown"} {
		if len(shim[op]) != 1 || shim[op][0].ParentID != root.SpanID || shim[op][0].TraceID != root.TraceID {
			t.Fatalf("span %s: %+v", op, shim[op])
		}
	}
	return root
}

func TestShimExitCodes(t *testing.T) {
	for _, tt := range []struct {
		args []string
		want int
	}{{[]string{"exit=3", "spans=10"}, 3}, {[]string{"kill-self=1"}, 128 + 9}, {[]string{"exit=0"}, 0}} {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			h := startShimHost(t)
			code, _, errOut := run(t, nil, "kata-agent-tracer", shimArgs(t, h, "agent.trace=isolated", tt.args...)...)
			if code != tt.want {
				t.Fatalf("exit %d, want %d\n%s", code, tt.want, errOut)
			}
			root := checkShimTrace(t, h.Spans(t))
			if root.Tags["exit-code"] != float64(tt.want) {
				t.Fatalf("root exit-code tag %v", root.Tags["exit-code"])
			}
			run := byService(h.Spans(t), "kata-agent")["agent-run"][0]
			if tt.want == 137 && run.Tags["signal"] != "killed" {
				t.Fatalf("agent-run tags %v", run.Tags)
			}
		})
	}
}

// TestShimSpansApartFromAnAgentThatTracesItself: with an agent that
// traces itself as the Kata 1.x agent does (its own trace, root
// kata-agent, source=agent), the shim's five spans are a trace of their
// own under --own-service-name, tagged source so too: two traces told
// apart. The agent's trace arrives whole beside them.
func TestShimSpansApartFromAnAgentThatTracesItself(t *testing.T) {
	h := startShimHost(t)
	code, _, errOut := run(t, nil, "kata-agent-tracer", shimArgs(t, h, "agent.trace=isolated", "own-trace=1", "spans=7", "hold=200")...)
	if code != 0 {
		t.Fatalf("exit %d\n%s", code, errOut)
	}
	if !strings.Contains(errOut, "the agent traces itself") {
		t.Errorf("the shim does not say it told its spans apart:\n%s", errOut)
	}
	recs := h.Spans(t)
	shim := byService(recs, "kata-agent-tracer")
	for _, op := range []string{"kata-agent", "boot", "agent-start", "agent-run", "shutdown"} {
		if len(shim[op]) != 1 {
			t.Fatalf("the shim's span %s under kata-agent-tracer: %d, want 1 (all: %v)", op, len(shim[op]), shim)
		}
	}
	root := shim["kata-agent"][0]
	if root.Tags["source"] != "kata-agent-tracer" || root.ParentID != "" {
		t.Fatalf("the shim's root: %+v", root)
	}
	agent := byService(recs, "kata-agent")
	if len(agent["kata-agent"]) != 1 || len(agent["agent-op"]) != 6 || agent["kata-agent"][0].Tags["source"] != "agent" ||
		agent["kata-agent"][0].TraceID == root.TraceID {
		t.Fatalf("the agent's own trace: %v", agent)
	}
}

func TestShimBadTraceValueStillRunsAgent(t *testing.T) {
	h := startShimHost(t)
	code, _, errOut := run(t, nil, "kata-agent-tracer", shimArgs(t, h, "quiet agent.trace=yes", "exit=3")...)
	if code != 3 {
		t.Fatalf("exit %d, want the agent's 3\n%s", code, errOut)
	}
	if !strings.Contains(errOut, `agent.trace=\"yes\" is not a tracing mode: want agent.trace, agent.trace=isolated (or true, 1), agent.trace=collated, or agent.trace=false (or 0)`) {
		t.Fatalf("no error naming the accepted values:\n%s", errOut)
	}
	if n := len(byService(h.Spans(t), "kata-agent")); n != 0 {
		t.Fatalf("untraced shim sent %d kinds of spans", n)
	}
}

func TestShimExecStopAfterFlushInOrder(t *testing.T) {
	h := startShimHost(t)
	marks := filepath.Join(t.TempDir(), "marks")
	m := bin(t, "katatrace-test-marker")
	args := append([]string{"--exec-stop", fmt.Sprintf("%s %s first %s", m, marks, h.Out()),
		"--exec-stop", fmt.Sprintf("'%s' '%s' second '%s'", m, marks, h.Out())},
		shimArgs(t, h, "agent.trace", "exit=0")...)
	if code, _, errOut := run(t, nil, "kata-agent-tracer", args...); code != 0 {
		t.Fatalf("exit %d\n%s", code, errOut)
	}
	got, _ := os.ReadFile(marks)
	if string(got) != "first 1\nsecond 1\n" {
		t.Fatalf("exec-stop marks = %q, want both, in order, each after the root span reached the host", got)
	}
}

func TestShimAgentCommandIsNeverParsed(t *testing.T) {
	h := startShimHost(t)
	// --help and --version after the agent are the agent's, not the shim's.
	args := shimArgs(t, h, "", "exit=4", "--help", "--version")
	if code, _, errOut := run(t, nil, "kata-agent-tracer", args...); code != 4 {
		t.Fatalf("exit %d, want the agent's 4\n%s", code, errOut)
	}
	// No -- and the agent command from KATATRACE_AGENT work too.
	args = []string{"--cmdline-file", cmdlineFile(t, ""), "--to", "unix://" + h.Sock, "--from", fmt.Sprintf("udp://127.0.0.1:%d", testutil.FreePort(t, "udp"))}
	if code, _, errOut := run(t, nil, "kata-agent-tracer", append(args, bin(t, "katatrace-test-agent"), "exit=5")...); code != 5 {
		t.Fatalf("exit %d, want 5\n%s", code, errOut)
	}
	env := []string{"KATATRACE_AGENT=" + bin(t, "katatrace-test-agent") + " exit=6"}
	if code, _, errOut := run(t, env, "kata-agent-tracer", args...); code != 6 {
		t.Fatalf("exit %d, want 6\n%s", code, errOut)
	}
	// A name without a slash is looked up in PATH, as a shell would, and
	// the log says which file runs.
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh in PATH")
	}
	code, _, errOut := run(t, nil, "kata-agent-tracer", append(args, "sh", "-c", "exit 7")...)
	if code != 7 || !strings.Contains(errOut, "path="+sh) {
		t.Fatalf("sh -c 'exit 7': exit %d, want 7, and the log naming %s\n%s", code, sh, errOut)
	}
	code, _, errOut = run(t, nil, "kata-agent-tracer", append(args, "no-such-agent-anywhere")...)
	if code != 127 || !strings.Contains(errOut, "no-such-agent-anywhere: not found in PATH=") {
		t.Fatalf("an agent not in PATH: exit %d, want 127\n%s", code, errOut)
	}
}

// inPIDNamespace runs the shim as PID 1 of new PID, mount and network
// namespaces, where reboot(2) ends only the namespace.
func inPIDNamespace(t *testing.T, args ...string) *testutil.Proc {
	unshare, err := exec.LookPath("unshare")
	if err != nil || os.Geteuid() != 0 {
		t.Skip("PID 1 tests need root and unshare(1) (util-linux)")
	}
	all := append([]string{"--pid", "--net", "--fork", "--mount-proc", bin(t, "kata-agent-tracer")}, args...)
	return testutil.Start(t, []string{"KATATRACE_TEST_AS_MAIN=1"}, unshare, all...)
}

func TestShimAsPID1(t *testing.T) {
	h := startShimHost(t)
	p := inPIDNamespace(t, shimArgs(t, h, "console=ttyS0 agent.trace=isolated", "spans=1000", "orphans=3", "exit=3")...)
	code := p.Wait(60 * time.Second)
	log := p.Stderr.String()
	if !strings.Contains(log, "action=poweroff") || !strings.Contains(log, "orphans_reaped=3") {
		t.Fatalf("shim did not power off after reaping 3 orphans (exit %d):\n%s", code, log)
	}
	if code == 3 || code == 0 {
		t.Fatalf("exit %d: PID 1 exited instead of ending the namespace with reboot(2)", code)
	}
	recs := h.Spans(t)
	root := checkShimTrace(t, recs)
	agent := byService(recs, "test-agent")
	if len(agent["agent-op"])+len(agent["agent-main"]) != 1000 {
		t.Fatalf("%d agent spans reached the host, want 1000", len(agent["agent-op"])+len(agent["agent-main"]))
	}
	if m := agent["agent-main"][0]; m.ParentID != root.SpanID || m.TraceID != root.TraceID {
		t.Fatalf("the agent's span is not a child of the shim's root: %+v", m)
	}
	for _, s := range recs {
		if s.TraceID != root.TraceID {
			t.Fatalf("span %s in another trace", s.Operation)
		}
	}
	boot := byService(recs, "kata-agent")["boot"][0]
	if boot.DurationUS <= 0 {
		t.Fatalf("boot span of %dµs", boot.DurationUS)
	}
}

func TestShimAsPID1PassesSIGTERM(t *testing.T) {
	h := startShimHost(t)
	p := inPIDNamespace(t, shimArgs(t, h, "agent.trace", "wait-signal=1", "spans=20")...)
	p.WaitLog("test agent: waiting for SIGTERM")
	// The shim is unshare's child; from here it is not PID 1.
	kids, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", p.Cmd.Process.Pid, p.Cmd.Process.Pid))
	if err != nil || len(strings.Fields(string(kids))) != 1 {
		t.Fatalf("shim pid: %q, %v", kids, err)
	}
	shim, _ := strconv.Atoi(strings.Fields(string(kids))[0])
	if err := syscall.Kill(shim, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	p.Wait(60 * time.Second)
	recs := h.Spans(t)
	root := checkShimTrace(t, recs)
	if root.Tags["exit-code"] != float64(143) {
		t.Fatalf("root exit-code %v, want 143", root.Tags["exit-code"])
	}
	main := byService(recs, "test-agent")["agent-main"]
	if len(main) != 1 || main[0].Tags["got-signal"] != "terminated" {
		t.Fatalf("the agent did not get SIGTERM: %+v", main)
	}
	if sd := byService(recs, "kata-agent")["shutdown"][0]; sd.Tags["reason"] != "stopped by terminated" {
		t.Fatalf("shutdown reason %v", sd.Tags["reason"])
	}
}

// TestShimJournalRelay: with --journal the shim also carries syslog
// messages to the host's text server, so the guest needs no redirect
// service of its own.
func TestShimJournalRelay(t *testing.T) {
	h := startShimHost(t)
	dir := testutil.SockDir(t)
	text := filepath.Join(dir, "h_5140")
	tp := start(t, nil, "vsock-to-text-server", "--from", "unix://"+text)
	tp.WaitLog("listening")
	log := filepath.Join(dir, "log")
	args := append([]string{"--journal", "--journal-from", "unixgram://" + log, "--journal-to", "unix://" + text}, shimArgs(t, h, "", "wait-signal=1")...)
	p := start(t, nil, "kata-agent-tracer", args...)
	p.WaitLog("test agent: waiting for SIGTERM")
	c, err := net.Dial("unixgram", log)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte("<30>kata-agent[1]: hello \x1b[31mhost\n"))
	testutil.Eventually(t, 10*time.Second, "the message on the host", func() bool {
		return strings.Contains(tp.Stdout.String(), `<30>kata-agent[1]: hello \x1b[31mhost`)
	})
	p.Signal(syscall.SIGTERM)
	if code := p.Wait(20 * time.Second); code != 143 {
		t.Fatalf("exit %d, want the agent's 143", code)
	}
}

// TestShimServesRelayMetrics: the shim's in-process relays are scraped at
// --metrics-listen while the agent runs.
func TestShimServesRelayMetrics(t *testing.T) {
	h := startShimHost(t)
	port := testutil.FreePort(t, "tcp")
	args := append([]string{"--metrics-listen", fmt.Sprintf("tcp://127.0.0.1:%d", port)},
		shimArgs(t, h, "agent.trace=isolated", "spans=5", "wait-signal=1")...)
	p := start(t, nil, "kata-agent-tracer", args...)
	p.WaitLog("serving metrics")
	p.WaitLog("agent started")
	testutil.Eventually(t, 10*time.Second, "the relay connected", func() bool {
		return scrape(t, port, `katatrace_relay_connected{kind="jaeger"}`) == 1
	})
	p.Signal(syscall.SIGTERM)
	if code := p.Wait(20 * time.Second); code != 143 {
		t.Fatalf("exit %d, want 143\n%s", code, p.Stderr.String())
	}
	checkShimTrace(t, h.Spans(t))
}

// TestShimSIGTERMBeforeTheAgentStarts: SIGTERM that comes while the shim
// is still starting (here: reading the kernel command line, a FIFO the
// test holds) is passed on as the agent starts, and counts as a stop: the
// log and the trace say the agent was stopped by it, not that it exited.
func TestShimSIGTERMBeforeTheAgentStarts(t *testing.T) {
	h := startShimHost(t)
	fifo := filepath.Join(t.TempDir(), "cmdline")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	args := []string{"--cmdline-file", fifo, "--to", "unix://" + h.Sock,
		"--from", fmt.Sprintf("udp://127.0.0.1:%d", testutil.FreePort(t, "udp")), "--flush-timeout", "10s",
		"--", bin(t, "katatrace-test-agent"), "hold=30000"}
	p := start(t, nil, "kata-agent-tracer", args...)
	opened := make(chan *os.File, 1)
	go func() {
		f, err := os.OpenFile(fifo, os.O_WRONLY, 0) // until the shim reads it: its signals are watched
		if err != nil {
			t.Error(err)
		}
		opened <- f
	}()
	var w *os.File
	select {
	case w = <-opened:
	case <-time.After(20 * time.Second):
		t.Fatalf("the shim never read its command line\n%s", p.Stderr.String())
	}
	if w == nil {
		return
	}
	p.Signal(syscall.SIGTERM)
	p.WaitLog("signal before the agent started")
	w.WriteString("agent.trace\n")
	w.Close()
	code := p.Wait(30 * time.Second)
	log := p.Stderr.String()
	if code != 143 || !strings.Contains(log, `reason="stopped by terminated"`) || strings.Contains(log, "agent exited") {
		t.Fatalf("exit %d, want the agent stopped by the early SIGTERM (143), and the log saying so\n%s", code, log)
	}
	if sd := byService(h.Spans(t), "kata-agent")["shutdown"][0]; sd.Tags["reason"] != "stopped by terminated" {
		t.Fatalf("shutdown reason %v", sd.Tags["reason"])
	}
}
