// Package seccomp holds the seccomp profiles the Kubernetes chart runs
// the host roles under (deploy/helm/katatrace): the container runtimes'
// default, which refuses socket(AF_VSOCK), plus that one call. One per
// architecture of the image, in the OCI runtime spec's form (a
// Localhost profile's, as containerd and CRI-O read it).
//
// The files are generated, not written: deploy/helm/test/genseccomp
// makes them from moby's default profile, and a test there fails when
// they differ from what it makes now.
package seccomp

import (
	"embed"
	"fmt"
	"slices"
	"strings"
)

//go:embed linux-*.json
var files embed.FS

// Arches lists the architectures (GOARCH) a profile exists for.
func Arches() []string {
	ents, _ := files.ReadDir(".")
	var as []string
	for _, e := range ents {
		as = append(as, strings.TrimSuffix(strings.TrimPrefix(e.Name(), "linux-"), ".json"))
	}
	slices.Sort(as)
	return as
}

// Profile returns the profile for arch (a GOARCH), as JSON.
func Profile(arch string) ([]byte, error) {
	if !slices.Contains(Arches(), arch) {
		return nil, fmt.Errorf("no seccomp profile for %q: there is one for %s", arch, strings.Join(Arches(), ", "))
	}
	return files.ReadFile("linux-" + arch + ".json")
}
