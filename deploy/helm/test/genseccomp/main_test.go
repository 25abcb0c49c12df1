package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"testing"

	"github.com/moby/profiles/seccomp"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// committed is where the binary embeds the profiles from.
const committed = "../../../../seccomp"

// TestProfilesAreGenerated: the committed profiles are what genseccomp
// makes now (make seccomp-profiles writes them).
func TestProfilesAreGenerated(t *testing.T) {
	ps, err := profiles()
	if err != nil {
		t.Fatal(err)
	}
	files, _ := filepath.Glob(filepath.Join(committed, "linux-*.json"))
	if len(files) != len(ps) {
		t.Errorf("%d committed profiles %v, %d generated", len(files), files, len(ps))
	}
	for name, want := range ps {
		got, err := os.ReadFile(filepath.Join(committed, name))
		if err != nil || string(got) != string(want) {
			t.Errorf("seccomp/%s differs from what genseccomp makes (%v): run make seccomp-profiles", name, err)
		}
	}
}

// TestOnlyVsockAdded: each committed profile is the resolved default
// with one rule more, socket(AF_VSOCK) allowed, and nothing else
// changed.
func TestOnlyVsockAdded(t *testing.T) {
	for goarch := range arches {
		t.Run(goarch, func(t *testing.T) {
			b, err := os.ReadFile(filepath.Join(committed, "linux-"+goarch+".json"))
			if err != nil {
				t.Fatal(err)
			}
			var got specs.LinuxSeccomp
			if err := json.Unmarshal(b, &got); err != nil {
				t.Fatal(err)
			}
			def, err := resolve(seccomp.DefaultProfile(), goarch)
			if err != nil {
				t.Fatal(err)
			}
			vsock := specs.LinuxSyscall{Names: []string{"socket"}, Action: specs.ActAllow,
				Args: []specs.LinuxSeccompArg{{Index: 0, Value: 40, Op: specs.OpEqualTo}}}
			i := slices.IndexFunc(got.Syscalls, func(s specs.LinuxSyscall) bool { return reflect.DeepEqual(s, vsock) })
			if i < 0 {
				t.Fatal("no socket(AF_VSOCK) rule")
			}
			for _, s := range def.Syscalls {
				if s.Action == specs.ActAllow && slices.Contains(s.Names, "socket") && allowsDomain(s.Args, 40) {
					t.Fatalf("the default allows socket(AF_VSOCK) already: %+v", s)
				}
			}
			got.Syscalls = slices.Delete(got.Syscalls, i, i+1)
			if !reflect.DeepEqual(&got, def) {
				t.Fatal("beyond socket(AF_VSOCK), the profile differs from the default resolved")
			}
		})
	}
}

// TestResolve: the conditions resolve as moby's do on each architecture
// for a container without capabilities.
func TestResolve(t *testing.T) {
	has := func(p *specs.LinuxSeccomp, name string, argIndex int) bool {
		for _, s := range p.Syscalls {
			if slices.Contains(s.Names, name) && s.Action == specs.ActAllow &&
				(argIndex < 0 && len(s.Args) == 0 || argIndex >= 0 && len(s.Args) == 1 && int(s.Args[0].Index) == argIndex) {
				return true
			}
		}
		return false
	}
	for _, c := range []struct {
		arch       string
		archs      []specs.Arch
		archPrctl  bool // amd64's own call
		cloneIndex int  // s390x passes clone's flags second
	}{
		{"amd64", []specs.Arch{specs.ArchX86_64, specs.ArchX86, specs.ArchX32}, true, 0},
		{"arm64", []specs.Arch{specs.ArchAARCH64, specs.ArchARM}, false, 0},
		{"ppc64le", nil, false, 0},
		{"s390x", []specs.Arch{specs.ArchS390X, specs.ArchS390}, false, 1},
	} {
		t.Run(c.arch, func(t *testing.T) {
			p, err := resolve(seccomp.DefaultProfile(), c.arch)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(p.Architectures, c.archs) {
				t.Errorf("architectures %v, want %v", p.Architectures, c.archs)
			}
			if has(p, "arch_prctl", -1) != c.archPrctl {
				t.Errorf("arch_prctl allowed: %v", !c.archPrctl)
			}
			if !has(p, "clone", c.cloneIndex) || has(p, "clone", 1-c.cloneIndex) {
				t.Errorf("clone's rule is not on argument %d alone", c.cloneIndex)
			}
			// No capability: CAP_SYS_ADMIN's calls refused, clone3 ENOSYS.
			if has(p, "mount", -1) || has(p, "bpf", -1) || has(p, "ptrace", -1) != true {
				t.Errorf("mount %v, bpf %v allowed; ptrace (kernel 4.8+) %v", has(p, "mount", -1), has(p, "bpf", -1), has(p, "ptrace", -1))
			}
			if p.DefaultAction != specs.ActErrno {
				t.Errorf("default action %s", p.DefaultAction)
			}
		})
	}
}
