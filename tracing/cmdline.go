package tracing

import (
	"fmt"
	"strings"

	"github.com/uber/jaeger-client-go"
)

// Mode is how the agent is traced, as the kernel command line says.
type Mode string

// The tracing modes.
const (
	// Dynamic: agent.trace absent, false or 0. Off until the runtime calls
	// StartTracing.
	Dynamic Mode = "dynamic"
	// Isolated: agent.trace, agent.trace=isolated, true or 1. Static
	// tracing, the agent's trace on its own.
	Isolated Mode = "isolated"
	// Collated: agent.trace=collated. Static tracing, the agent's trace
	// joined to the runtime's (agent.trace_parent, or per call over gRPC).
	Collated Mode = "collated"
)

// Static reports whether tracing starts with the VM.
func (m Mode) Static() bool { return m == Isolated || m == Collated }

// Settings are the tracing settings of the kernel command line.
type Settings struct {
	Mode Mode
	// Parent, from agent.trace_parent=<uber-trace-id>, is the runtime's
	// span the root span joins; invalid when absent.
	Parent jaeger.SpanContext
}

// ParseCmdline reads the tracing settings from a kernel command line. Bad
// values are returned as errors, each naming the parameter and what it
// accepts; the settings returned are then what is still valid (an unknown
// agent.trace means dynamic), because the VM must boot anyway.
func ParseCmdline(cmdline string) (Settings, []error) {
	s := Settings{Mode: Dynamic}
	var errs []error
	for _, w := range SplitCmdline(cmdline) {
		key, val, hasVal := strings.Cut(w, "=")
		switch key {
		case "agent.trace":
			// true/1 and false/0 are the booleans Kata 2.x's agent takes.
			switch {
			case !hasVal || val == "isolated" || val == "true" || val == "1":
				s.Mode = Isolated
			case val == "collated":
				s.Mode = Collated
			case val == "false" || val == "0":
				s.Mode = Dynamic
			default:
				s.Mode = Dynamic
				errs = append(errs, fmt.Errorf("kernel command line: agent.trace=%q is not a tracing mode: want agent.trace, agent.trace=isolated (or true, 1), agent.trace=collated, or agent.trace=false (or 0); the agent runs untraced", val))
			}
		case "agent.trace_parent":
			ctx, err := jaeger.ContextFromString(val)
			if err != nil || !ctx.IsValid() {
				s.Parent = jaeger.SpanContext{}
				errs = append(errs, fmt.Errorf("kernel command line: agent.trace_parent=%q is not an uber-trace-id (TRACEID:SPANID:PARENTID:FLAGS, hex): the root span starts a new trace", val))
				continue
			}
			s.Parent = ctx
		}
	}
	return s, errs
}

// SplitCmdline splits a kernel command line into words as the kernel does:
// on spaces, with double quotes grouping (and removed), so that
// key="a b" is the word key=a b.
func SplitCmdline(s string) []string {
	var words []string
	var w strings.Builder
	inQuote, inWord := false, false
	for _, r := range s {
		switch {
		case r == '"':
			inQuote, inWord = !inQuote, true
		case !inQuote && (r == ' ' || r == '\t' || r == '\n'):
			if inWord {
				words = append(words, w.String())
				w.Reset()
				inWord = false
			}
		default:
			w.WriteRune(r)
			inWord = true
		}
	}
	if inWord {
		words = append(words, w.String())
	}
	return words
}
