package roles

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"

	"github.com/katatrace/katatrace/seccomp"
)

// seccompProfileCmd prints or installs the seccomp profile the host roles
// run under in Kubernetes: the runtime's default plus socket(AF_VSOCK).
// The chart's init container writes it into the kubelet's seccomp
// directory, which a Localhost profile is read from.
type seccompProfileCmd struct {
	Write string `help:"Write the profile to PATH (atomically: a temporary file beside it, renamed; mode 0644; its directory made) instead of printing it." placeholder:"PATH" type:"path"`
	Arch  string `help:"The architecture (GOARCH) whose profile to give: amd64, arm64, ppc64le or s390x. Default: this binary's." placeholder:"ARCH"`
}

func (s *seccompProfileCmd) Run(rc *RunContext) error {
	arch := s.Arch
	if arch == "" {
		arch = runtime.GOARCH
	}
	b, err := seccomp.Profile(arch)
	if err != nil {
		return flagErr("arch", err)
	}
	if s.Write == "" {
		_, err := rc.Stdout.Write(b)
		return err
	}
	if err := writeAtomic(s.Write, b); err != nil {
		return fmt.Errorf("--write: %w", err)
	}
	rc.Log.Info("seccomp profile written", "path", s.Write, "arch", arch, "bytes", len(b))
	return nil
}

// writeAtomic replaces path with b so that a reader (the kubelet, a
// container starting beside) sees the old file or the new one, never a
// part: a temporary file in the same directory, synced, renamed.
func writeAtomic(path string, b []byte) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp) // a no-op once renamed
	_, err = f.Write(b)
	if err == nil {
		err = f.Chmod(0o644) // CreateTemp's 0600 would do for root, but a profile is no secret
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
