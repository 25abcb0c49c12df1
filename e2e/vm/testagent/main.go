// Command testagent stands in for the Kata agent inside the test VM: it
// emits spans with jaeger-client-go, configured from the environment the
// shim gives it (JAEGER_AGENT_HOST/PORT, UBER_TRACE_ID), then exits.
//
//	testagent spans=N hold=MS exit=C
package main

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/opentracing/opentracing-go"
	"github.com/uber/jaeger-client-go"
	"github.com/uber/jaeger-client-go/config"
)

func main() {
	opts := map[string]int{}
	for _, a := range os.Args[1:] {
		k, v, _ := strings.Cut(a, "=")
		opts[k], _ = strconv.Atoi(v)
	}
	fmt.Printf("testagent: pid %d, %d spans, UBER_TRACE_ID=%q\n", os.Getpid(), opts["spans"], os.Getenv("UBER_TRACE_ID"))
	// Readiness: the relay must own the tracer's port before the agent runs,
	// or its first spans go nowhere.
	hostPort := net.JoinHostPort(os.Getenv("JAEGER_AGENT_HOST"), os.Getenv("JAEGER_AGENT_PORT"))
	if a, err := net.ResolveUDPAddr("udp", hostPort); err == nil {
		if c, err := net.ListenUDP("udp", a); err != nil {
			fmt.Printf("testagent: relay already bound at start (%s)\n", hostPort)
		} else {
			c.Close()
			fmt.Printf("testagent: nothing bound %s at start\n", hostPort)
		}
	}
	if n := opts["spans"]; n > 0 {
		cfg, err := config.FromEnv()
		if err != nil {
			fmt.Println("testagent:", err)
			os.Exit(97)
		}
		cfg.ServiceName = "test-agent"
		cfg.Sampler = &config.SamplerConfig{Type: "const", Param: 1}
		cfg.Reporter.QueueSize = 100000
		tr, closer, err := cfg.NewTracer()
		if err != nil {
			fmt.Println("testagent:", err)
			os.Exit(97)
		}
		var so []opentracing.StartSpanOption
		if parent, err := jaeger.ContextFromString(os.Getenv("UBER_TRACE_ID")); err == nil {
			so = append(so, opentracing.ChildOf(parent))
		}
		root := tr.StartSpan("agent-main", so...)
		for i := range n - 1 {
			tr.StartSpan("agent-op", opentracing.ChildOf(root.Context()), opentracing.Tag{Key: "i", Value: i}).Finish()
		}
		root.Finish()
		_ = closer.Close()
	}
	// hold keeps the agent running a while (ms), as a real one would.
	time.Sleep(time.Duration(opts["hold"]) * time.Millisecond)
	up, _ := os.ReadFile("/proc/uptime")
	fmt.Printf("testagent: done at uptime %s\n", strings.Fields(string(up) + " ?")[0])
	os.Exit(opts["exit"])
}
