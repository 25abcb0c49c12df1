package seccomp

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
)

func TestProfiles(t *testing.T) {
	// The image's architectures (Makefile's IMAGE_ARCHS), each a profile.
	if got, want := Arches(), []string{"amd64", "arm64", "ppc64le", "s390x"}; !slices.Equal(got, want) {
		t.Fatalf("Arches() = %v, want %v", got, want)
	}
	for _, a := range Arches() {
		t.Run(a, func(t *testing.T) {
			b, err := Profile(a)
			if err != nil {
				t.Fatal(err)
			}
			// The OCI form, refusing by default, allowing socket(AF_VSOCK).
			var p struct {
				DefaultAction string `json:"defaultAction"`
				Syscalls      []struct {
					Names  []string `json:"names"`
					Action string   `json:"action"`
					Args   []struct {
						Index uint   `json:"index"`
						Value uint64 `json:"value"`
						Op    string `json:"op"`
					} `json:"args"`
				} `json:"syscalls"`
			}
			if err := json.Unmarshal(b, &p); err != nil {
				t.Fatal(err)
			}
			vsock := false
			for _, s := range p.Syscalls {
				if slices.Contains(s.Names, "socket") && s.Action == "SCMP_ACT_ALLOW" && len(s.Args) == 1 &&
					s.Args[0].Index == 0 && s.Args[0].Value == 40 && s.Args[0].Op == "SCMP_CMP_EQ" {
					vsock = true
				}
			}
			if p.DefaultAction != "SCMP_ACT_ERRNO" || !vsock {
				t.Fatalf("defaultAction %q, socket(AF_VSOCK) allowed: %v", p.DefaultAction, vsock)
			}
		})
	}
}

func TestProfileOfAnotherArch(t *testing.T) {
	_, err := Profile("riscv64")
	if err == nil || !strings.Contains(err.Error(), `"riscv64"`) || !strings.Contains(err.Error(), "amd64, arm64, ppc64le, s390x") {
		t.Fatalf("err = %v", err)
	}
}
