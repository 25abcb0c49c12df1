package tracing

import (
	"slices"
	"strings"
	"testing"
)

var cmdlineTests = []struct {
	cmdline string
	mode    Mode
	parent  string // the parent's trace id, or ""
	errs    []string
}{
	{"console=ttyS0 quiet", Dynamic, "", nil},
	{"", Dynamic, "", nil},
	{"agent.trace", Isolated, "", nil},
	{"agent.trace=isolated", Isolated, "", nil},
	{"root=/dev/vda1 agent.trace=collated agent.log=debug", Collated, "", nil},
	{"agent.trace=true", Isolated, "", nil},
	{"agent.trace=1", Isolated, "", nil},
	{"agent.trace=false", Dynamic, "", nil},
	{"agent.trace agent.trace=0", Dynamic, "", nil},
	{"agent.trace=yes", Dynamic, "", []string{`agent.trace="yes"`, "agent.trace=isolated", "true"}},
	{"agent.trace=bogus", Dynamic, "", []string{`agent.trace="bogus"`}},
	{"agent.trace agent.trace=collated", Collated, "", nil},
	{"agent.tracer=1 xagent.trace", Dynamic, "", nil},
	{"agent.trace=collated agent.trace_parent=5fd9b2ee2cc7ee1b:5fd9b2ee2cc7ee1b:0:1", Collated, "5fd9b2ee2cc7ee1b", nil},
	{"agent.trace agent.trace_parent=nonsense", Isolated, "", []string{"agent.trace_parent", "uber-trace-id"}},
	{`KATATRACE_TO="serial:///dev/ttyS1" agent.trace="isolated" -- /bin/agent`, Isolated, "", nil},
}

func TestParseCmdline(t *testing.T) {
	for _, tt := range cmdlineTests {
		t.Run(tt.cmdline, func(t *testing.T) {
			s, errs := ParseCmdline(tt.cmdline)
			if s.Mode != tt.mode {
				t.Errorf("mode = %s, want %s", s.Mode, tt.mode)
			}
			if got := ""; s.Parent.IsValid() {
				got = s.Parent.TraceID().String()
				if got != tt.parent {
					t.Errorf("parent = %s, want %s", got, tt.parent)
				}
			} else if tt.parent != "" {
				t.Errorf("no parent, want %s", tt.parent)
			}
			if len(errs) != min(len(tt.errs), 1) {
				t.Fatalf("errors = %v, want %v", errs, tt.errs)
			}
			for _, w := range tt.errs {
				if !strings.Contains(errs[0].Error(), w) {
					t.Errorf("error %q lacks %q", errs[0], w)
				}
			}
		})
	}
}

func TestSplitCmdline(t *testing.T) {
	got := SplitCmdline(`a  b="c d" "e f"=g  h` + "\n")
	if want := []string{"a", "b=c d", "e f=g", "h"}; !slices.Equal(got, want) {
		t.Fatalf("got %q, want %q", got, want)
	}
}

func FuzzParseCmdline(f *testing.F) {
	for _, tt := range cmdlineTests {
		f.Add(tt.cmdline)
	}
	f.Fuzz(func(t *testing.T, s string) {
		st, errs := ParseCmdline(s)
		switch st.Mode {
		case Dynamic, Isolated, Collated:
		default:
			t.Fatalf("mode %q", st.Mode)
		}
		for _, err := range errs {
			if !strings.Contains(err.Error(), "kernel command line: agent.trace") {
				t.Fatalf("error does not name the parameter: %v", err)
			}
		}
		for _, w := range SplitCmdline(s) {
			if w == "" && !strings.Contains(s, `"`) {
				t.Fatalf("empty word from %q", s)
			}
		}
	})
}
