package spanagent

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/opentracing/opentracing-go"
	"github.com/uber/jaeger-client-go"
	"github.com/uber/jaeger-client-go/config"
)

// Main runs the agent with key=value arguments and returns its exit code:
//
//	orphans=N      leave N short-lived orphans, and exit only once they are reaped
//	spans=N        emit N spans (agent-main and N-1 agent-op children)
//	own-trace=1    trace as the Kata 1.x agent does: a trace of its own (not
//	               the shim's UBER_TRACE_ID), root kata-agent, service
//	               kata-agent, tag source=agent
//	wait-signal=1  wait for SIGTERM first (the root span records it; exit 143)
//	hold=MS        keep running MS milliseconds after the spans
//	kill-self=1    end by SIGKILL
//	exit=C         exit with C
//
// The orphans are this program again, with --orphan-maker and --sleeper.
func Main(args []string) int {
	switch {
	case len(args) > 0 && args[0] == "--orphan-maker":
		return makeOrphan()
	case len(args) > 0 && args[0] == "--sleeper":
		time.Sleep(50 * time.Millisecond)
		return 0
	}
	opts := map[string]string{}
	for _, a := range args {
		k, v, _ := strings.Cut(a, "=")
		opts[k] = v
	}
	n := func(k string) int { i, _ := strconv.Atoi(opts[k]); return i }
	fmt.Printf("testagent: pid %d, %d spans, UBER_TRACE_ID=%q\n", os.Getpid(), n("spans"), os.Getenv("UBER_TRACE_ID"))
	probeRelay()

	var orphans []int
	for range n("orphans") {
		out, err := exec.Command(os.Args[0], "--orphan-maker").Output()
		pid, perr := strconv.Atoi(strings.TrimSpace(string(out)))
		if err != nil || perr != nil {
			fmt.Fprintln(os.Stderr, "testagent: orphan maker:", err, perr)
			return 99
		}
		orphans = append(orphans, pid)
	}
	defer waitReaped(orphans)

	var got os.Signal
	if opts["wait-signal"] == "1" {
		ch := make(chan os.Signal, 1)
		signal.Notify(ch, syscall.SIGTERM)
		fmt.Fprintln(os.Stderr, "test agent: waiting for SIGTERM")
		select {
		case got = <-ch:
		case <-time.After(time.Minute):
			return 98
		}
	}
	if k := n("spans"); k > 0 {
		if err := emit(k, got, opts["own-trace"] == "1"); err != nil {
			fmt.Fprintln(os.Stderr, "testagent:", err)
			return 97
		}
	}
	time.Sleep(time.Duration(n("hold")) * time.Millisecond)
	if opts["kill-self"] == "1" {
		_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
		time.Sleep(time.Minute)
	}
	up, _ := os.ReadFile("/proc/uptime")
	fmt.Printf("testagent: done at uptime %s\n", strings.Fields(string(up) + " ?")[0])
	if got == syscall.SIGTERM {
		return 143
	}
	return n("exit")
}

// probeRelay says whether the tracer's port was bound when the agent
// started: the shim must be relaying before the agent runs, or its first
// spans go nowhere.
func probeRelay() {
	hostPort := net.JoinHostPort(os.Getenv("JAEGER_AGENT_HOST"), os.Getenv("JAEGER_AGENT_PORT"))
	a, err := net.ResolveUDPAddr("udp", hostPort)
	if err != nil {
		return
	}
	c, err := net.ListenUDP("udp", a)
	if err != nil {
		fmt.Printf("testagent: relay already bound at start (%s)\n", hostPort)
		return
	}
	c.Close()
	fmt.Printf("testagent: nothing bound %s at start\n", hostPort)
}

func emit(n int, got os.Signal, own bool) error {
	cfg, err := config.FromEnv()
	if err != nil {
		return err
	}
	cfg.ServiceName = "test-agent"
	rootOp := "agent-main"
	var so []opentracing.StartSpanOption
	if own {
		cfg.ServiceName, rootOp = "kata-agent", "kata-agent"
		so = append(so, opentracing.Tag{Key: "source", Value: "agent"})
	} else if parent, err := jaeger.ContextFromString(os.Getenv("UBER_TRACE_ID")); err == nil {
		so = append(so, opentracing.ChildOf(parent))
	}
	cfg.Sampler = &config.SamplerConfig{Type: "const", Param: 1}
	cfg.Reporter.QueueSize = 100000
	tr, closer, err := cfg.NewTracer()
	if err != nil {
		return err
	}
	root := tr.StartSpan(rootOp, so...)
	if got != nil {
		root.SetTag("got-signal", got.String())
	}
	for i := range n - 1 {
		tr.StartSpan("agent-op", opentracing.ChildOf(root.Context()), opentracing.Tag{Key: "i", Value: i}).Finish()
	}
	root.Finish()
	return closer.Close()
}

// makeOrphan starts a sleeper, prints its pid and returns without waiting
// for it: the sleeper's parent is gone, so it is reparented to the shim.
func makeOrphan() int {
	cmd := exec.Command(os.Args[0], "--sleeper")
	if err := cmd.Start(); err != nil {
		return 1
	}
	fmt.Println(cmd.Process.Pid)
	return 0
}

// waitReaped returns once the shim has reaped every orphan (a zombie still
// takes signal 0): tests count them at the shim's shutdown.
func waitReaped(pids []int) {
	deadline := time.Now().Add(30 * time.Second)
	for _, pid := range pids {
		for syscall.Kill(pid, 0) != syscall.ESRCH && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
	}
}
