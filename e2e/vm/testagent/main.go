// Command testagent stands in for the Kata agent inside the test VM: it
// emits spans with jaeger-client-go, configured from the environment the
// shim gives it (JAEGER_AGENT_HOST/PORT, UBER_TRACE_ID), then exits.
//
//	testagent spans=N exit=C
package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"

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
	fmt.Println("testagent: done")
	os.Exit(opts["exit"])
}
