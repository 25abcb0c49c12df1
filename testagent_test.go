package main

import (
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/opentracing/opentracing-go"
	"github.com/uber/jaeger-client-go"
	"github.com/uber/jaeger-client-go/config"
)

// testAgent stands in for the Kata agent. Its arguments, key=value:
// orphans=N spawns N short-lived orphans; spans=N emits N spans with
// jaeger-client-go (to JAEGER_AGENT_HOST:PORT, under UBER_TRACE_ID);
// wait-signal=1 runs until SIGTERM; kill-self=1 ends by SIGKILL; exit=C
// exits with C.
func testAgent(args []string) int {
	opts := map[string]string{}
	for _, a := range args {
		k, v, _ := strings.Cut(a, "=")
		opts[k] = v
	}
	n := func(k string) int { i, _ := strconv.Atoi(opts[k]); return i }
	var orphans []int
	for range n("orphans") {
		// The orphan maker starts a sleeper and exits at once, so the
		// sleeper's parent dies: it is reparented to the shim.
		out, err := exec.Command(sibling("katatrace-test-orphan-maker")).Output()
		pid, perr := strconv.Atoi(strings.TrimSpace(string(out)))
		if err != nil || perr != nil {
			fmt.Fprintln(os.Stderr, "orphan maker:", err, perr)
			return 99
		}
		orphans = append(orphans, pid)
	}
	defer func() {
		// Exit only once the shim has reaped every orphan (a zombie still
		// takes signal 0): the test counts them at the shim's shutdown.
		deadline := time.Now().Add(30 * time.Second)
		for _, pid := range orphans {
			for syscall.Kill(pid, 0) != syscall.ESRCH && time.Now().Before(deadline) {
				time.Sleep(5 * time.Millisecond)
			}
		}
	}()
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
		cfg, err := config.FromEnv()
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 97
		}
		cfg.ServiceName = "test-agent"
		cfg.Sampler = &config.SamplerConfig{Type: "const", Param: 1}
		cfg.Reporter.QueueSize = 100000
		tr, closer, err := cfg.NewTracer()
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 97
		}
		var opts []opentracing.StartSpanOption
		if parent, err := jaeger.ContextFromString(os.Getenv("UBER_TRACE_ID")); err == nil {
			opts = append(opts, opentracing.ChildOf(parent))
		}
		root := tr.StartSpan("agent-main", opts...)
		if got != nil {
			root.SetTag("got-signal", got.String())
		}
		for i := range k - 1 {
			tr.StartSpan("agent-op", opentracing.ChildOf(root.Context()), opentracing.Tag{Key: "i", Value: i}).Finish()
		}
		root.Finish()
		closer.Close()
	}
	if opts["kill-self"] == "1" {
		syscall.Kill(os.Getpid(), syscall.SIGKILL)
		time.Sleep(time.Minute)
	}
	if got == syscall.SIGTERM {
		return 143
	}
	return n("exit")
}

// orphanMaker starts a sleeper and returns without waiting for it.
func orphanMaker() int {
	cmd := exec.Command(sibling("katatrace-test-sleeper"))
	if err := cmd.Start(); err != nil {
		return 1
	}
	fmt.Println(cmd.Process.Pid)
	return 0
}

// marker appends "NAME N" to FILE, N being how many root spans of the shim
// HOSTFILE (a host relay's JSONL) holds: marker FILE NAME HOSTFILE.
func marker(args []string) int {
	f, err := os.OpenFile(args[0], os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return 1
	}
	defer f.Close()
	host, _ := os.ReadFile(args[2])
	fmt.Fprintln(f, args[1], strings.Count(string(host), `"operation":"kata-agent"`))
	return 0
}

// sibling is another helper's symlink, beside this one.
func sibling(name string) string { return filepath.Join(filepath.Dir(os.Args[0]), name) }

// testHelpers are the helper programs the test binary is when called by
// these names (symlinks made by bin).
var testHelpers = map[string]func(args []string) int{
	"katatrace-test-agent":        testAgent,
	"katatrace-test-orphan-maker": func([]string) int { return orphanMaker() },
	"katatrace-test-sleeper":      func([]string) int { time.Sleep(50 * time.Millisecond); return 0 },
	"katatrace-test-marker":       marker,
}
