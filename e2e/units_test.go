package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
)

var exposureRE = regexp.MustCompile(`Overall exposure level for \S+: ([0-9.]+)`)

// TestHostUnitsSandboxed installs everything as an image builder would
// (make install DESTDIR=… PREFIX=/usr) and asks systemd how exposed each
// host daemon is: they parse bytes from untrusted guests.
func TestHostUnitsSandboxed(t *testing.T) {
	sa, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze is missing (apt-get install systemd)")
	}
	root := t.TempDir()
	repo, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("make", "-C", repo, "--no-print-directory", "install", "DESTDIR="+root, "PREFIX=/usr").CombinedOutput(); err != nil {
		t.Fatalf("make install: %v\n%s", err, out)
	}
	for _, unit := range []string{"vsock-to-udp-server.service", "vsock-to-text-server.service", "kata-trace-forwarder.service"} {
		if _, err := os.Stat(filepath.Join(root, "usr/lib/systemd/system", unit)); err != nil {
			t.Fatalf("make install did not install %s: %v", unit, err)
		}
		out, _ := exec.Command(sa, "security", "--offline=yes", "--root="+root, unit).CombinedOutput()
		m := exposureRE.FindSubmatch(out)
		if m == nil {
			t.Fatalf("systemd-analyze security %s said no exposure:\n%s", unit, out)
		}
		exposure, _ := strconv.ParseFloat(string(m[1]), 64)
		t.Logf("%s: exposure %.1f", unit, exposure)
		if exposure > 2.0 {
			t.Errorf("%s: exposure %.1f, want 2.0 or less:\n%s", unit, exposure, out)
		}
	}
}
