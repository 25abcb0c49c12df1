// Command genseccomp writes the seccomp profiles that the katatrace
// binary embeds (seccomp/linux-ARCH.json, `katatrace seccomp-profile`):
// moby's default profile (github.com/moby/profiles/seccomp, the one
// containerd's and CRI-O's defaults derive from), resolved for a
// container without capabilities on each of the image's architectures,
// with one rule more: socket(AF_VSOCK, ...) allowed, which the default
// refuses.
//
// Resolved, not moby's own format: containerd reads a Localhost profile
// as the OCI runtime spec's LinuxSeccomp and ignores what it does not
// know, so moby's "includes"/"excludes" conditions would be dropped and
// every conditional rule (CAP_SYS_ADMIN's mount among them) applied.
// CRI-O reads both forms.
//
//	go run ./genseccomp -out ../../../seccomp
package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"

	"github.com/moby/profiles/seccomp"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// arches are the image's (make image's IMAGE_ARCHS), by GOARCH, with the
// seccomp architecture whose archMap entry (its sub-architectures too)
// the profile lists.
var arches = map[string]specs.Arch{
	"amd64":   specs.ArchX86_64,
	"arm64":   specs.ArchAARCH64,
	"ppc64le": specs.ArchPPC64LE,
	"s390x":   specs.ArchS390X,
}

// minKernel is the kernel the rules' minKernel conditions are resolved
// for: 4.8 added vhost-vsock, the host side of vsock, so every Kata host
// has at least it. A rule asking for a newer kernel fails the generator:
// which way it goes is a decision to make, not to guess.
var minKernel = seccomp.KernelVersion{Kernel: 4, Major: 8}

func main() {
	out := flag.String("out", "", "directory to write linux-ARCH.json into")
	flag.Parse()
	if *out == "" {
		fmt.Fprintln(os.Stderr, "genseccomp: -out DIR is required")
		os.Exit(2)
	}
	ps, err := profiles()
	if err != nil {
		fmt.Fprintln(os.Stderr, "genseccomp:", err)
		os.Exit(1)
	}
	for name, b := range ps {
		if err := os.WriteFile(filepath.Join(*out, name), b, 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "genseccomp:", err)
			os.Exit(1)
		}
	}
}

// profiles returns each architecture's profile by file name.
func profiles() (map[string][]byte, error) {
	ps := map[string][]byte{}
	for goarch := range arches {
		p, err := resolve(seccomp.DefaultProfile(), goarch)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", goarch, err)
		}
		if p, err = allowVsock(p); err != nil {
			return nil, fmt.Errorf("%s: %w", goarch, err)
		}
		var b bytes.Buffer
		enc := json.NewEncoder(&b)
		enc.SetIndent("", "  ")
		if err := enc.Encode(p); err != nil {
			return nil, err
		}
		ps["linux-"+goarch+".json"] = b.Bytes()
	}
	return ps, nil
}

// resolve turns moby's conditional profile into the OCI form for goarch,
// as moby's own resolution would on that architecture for a container
// with no capability (the chart drops them all) on a minKernel kernel.
func resolve(p *seccomp.Seccomp, goarch string) (*specs.LinuxSeccomp, error) {
	out := p.LinuxSeccomp
	out.Syscalls = nil
	for _, a := range p.ArchMap {
		if a.Arch == arches[goarch] {
			out.Architectures = append([]specs.Arch{a.Arch}, a.SubArches...)
		}
	}
	// No entry (ppc64le has none): no list, the native architecture
	// alone, as moby's resolution leaves it there.
	for _, s := range p.Syscalls {
		ok, err := applies(s, goarch)
		if err != nil {
			return nil, fmt.Errorf("rule for %v: %w", s.Names, err)
		}
		if ok {
			out.Syscalls = append(out.Syscalls, s.LinuxSyscall)
		}
	}
	return &out, nil
}

func applies(s *seccomp.Syscall, goarch string) (bool, error) {
	//lint:ignore SA1019 refused here, where moby's resolution would rename it
	if old := s.Name; old != "" {
		return false, fmt.Errorf("the deprecated name field (%q)", old)
	}
	if e := s.Excludes; e != nil {
		// Excluded caps: the container holds none of them.
		if slices.Contains(e.Arches, goarch) {
			return false, nil
		}
		if e.MinKernel != nil {
			return false, fmt.Errorf("an excludes.minKernel (%s), which genseccomp does not resolve", e.MinKernel)
		}
	}
	if i := s.Includes; i != nil {
		if len(i.Caps) > 0 { // the container has none
			return false, nil
		}
		if len(i.Arches) > 0 && !slices.Contains(i.Arches, goarch) {
			return false, nil
		}
		if k := i.MinKernel; k != nil && (k.Kernel > minKernel.Kernel || k.Kernel == minKernel.Kernel && k.Major > minKernel.Major) {
			return false, fmt.Errorf("includes.minKernel %s, above %s: decide whether a Kata host has it", k, &minKernel)
		}
	}
	return true, nil
}

// allowVsock adds socket(AF_VSOCK) after the default's socket rules,
// having checked that the default refuses it (else the rule would be
// pointless and this program out of date).
func allowVsock(p *specs.LinuxSeccomp) (*specs.LinuxSeccomp, error) {
	last := -1
	for i, s := range p.Syscalls {
		if !slices.Contains(s.Names, "socket") {
			continue
		}
		last = i
		if s.Action != specs.ActAllow {
			continue
		}
		if allowsDomain(s.Args, unix.AF_VSOCK) {
			return nil, fmt.Errorf("the default already allows socket(AF_VSOCK): %+v", s)
		}
	}
	if last < 0 {
		return nil, fmt.Errorf("the default has no socket rule")
	}
	rule := specs.LinuxSyscall{
		Names:  []string{"socket"},
		Action: specs.ActAllow,
		Args:   []specs.LinuxSeccompArg{{Index: 0, Value: unix.AF_VSOCK, Op: specs.OpEqualTo}},
	}
	p.Syscalls = slices.Insert(p.Syscalls, last+1, rule)
	return p, nil
}

// allowsDomain says whether an allowing rule's conditions let socket(d)
// through (runc ORs repeated conditions on one argument: any will do).
func allowsDomain(args []specs.LinuxSeccompArg, d uint64) bool {
	if len(args) == 0 {
		return true
	}
	for _, a := range args {
		if a.Index != 0 {
			return true // not about the domain
		}
		switch a.Op {
		case specs.OpEqualTo:
			if d == a.Value {
				return true
			}
		case specs.OpLessThan:
			if d < a.Value {
				return true
			}
		case specs.OpLessEqual:
			if d <= a.Value {
				return true
			}
		case specs.OpNotEqual:
			if d != a.Value {
				return true
			}
		default:
			return true // a form this check does not read: assume the worst
		}
	}
	return false
}
