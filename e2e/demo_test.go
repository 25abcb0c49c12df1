package e2e

import (
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// TestDemo runs what README.md's first command runs (make demo): the demo
// must print the whole trace, root and children, and exit 0.
func TestDemo(t *testing.T) {
	bin, _ := binaries(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "run", "./cmd/katatrace-demo", "--bin", bin)
	cmd.Dir = ".."
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("demo: %v\n%s", err, out)
	}
	for _, want := range []string{"8 spans", "└─ kata-agent kata-agent", "CreateSandbox", "StartContainer", "shutdown"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("demo output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(string(out), "level=WARN") || strings.Contains(string(out), "level=ERROR") {
		t.Errorf("demo output has warnings:\n%s", out)
	}
}
