package test

import (
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

// TestArgsAreTheBinarys: every flag the chart gives a container is one
// its role (or katatrace seccomp-profile) takes, by the binary's help:
// KATATRACE_BIN, which make chart-test sets to make build's.
func TestArgsAreTheBinarys(t *testing.T) {
	bin := os.Getenv("KATATRACE_BIN")
	if bin == "" {
		t.Skip("KATATRACE_BIN unset: make chart-test sets it to bin/katatrace")
	}
	helps := map[string]map[string]bool{}
	flagsOf := func(t *testing.T, cmd ...string) map[string]bool {
		key := strings.Join(cmd, " ")
		if f, ok := helps[key]; ok {
			return f
		}
		out, err := exec.Command(bin, append(cmd, "--help")...).CombinedOutput()
		if err != nil {
			t.Fatalf("katatrace %s --help: %v\n%s", key, err, out)
		}
		f := map[string]bool{}
		for _, m := range regexp.MustCompile(`(?m)^\s+(?:-\w, )?--([a-z0-9-]+)`).FindAllStringSubmatch(string(out), -1) {
			f[m[1]] = true
		}
		helps[key] = f
		return f
	}
	check := func(t *testing.T, c corev1.Container, cmd []string, args []string) {
		known := flagsOf(t, cmd...)
		for _, a := range args {
			name, _, _ := strings.Cut(strings.TrimPrefix(a, "--"), "=")
			switch {
			case !strings.HasPrefix(a, "--"):
				t.Errorf("%s: %q is no --flag=value", c.Name, a)
			case known[name]:
			default:
				t.Errorf("%s: --%s is not a flag of katatrace %s", c.Name, name, strings.Join(cmd, " "))
			}
		}
	}
	for _, args := range [][]string{{"--values", allOn}, {"--set", "seccomp.profile=RuntimeDefault", "--set", "hostRelays.enabled=true"}} {
		o := mustRender(t, args...)
		for _, ds := range o.daemonSets {
			for _, c := range ds.Spec.Template.Spec.Containers {
				role := strings.TrimPrefix(c.Command[0], "/usr/bin/")
				check(t, c, []string{role}, c.Args)
			}
			for _, c := range ds.Spec.Template.Spec.InitContainers {
				if len(c.Command) < 2 || c.Command[0] != "/usr/bin/katatrace" {
					t.Fatalf("init container %s runs %v", c.Name, c.Command)
				}
				check(t, c, c.Command[1:2], c.Command[2:])
			}
		}
	}
}
