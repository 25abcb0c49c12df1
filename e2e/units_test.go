package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
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
	rate := func(root, unit string) {
		t.Helper()
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
	for _, unit := range []string{"vsock-to-udp-server.service", "vsock-to-text-server.service", "kata-trace-forwarder.service"} {
		if _, err := os.Stat(filepath.Join(root, "usr/lib/systemd/system", unit)); err != nil {
			t.Fatalf("make install did not install %s: %v", unit, err)
		}
		rate(root, unit)
	}
	// With the shipped hybrid-vsock drop-in, as the guide has operators
	// put it in.
	dropIns := filepath.Join(root, "etc/systemd/system/vsock-to-udp-server.service.d")
	if err := os.MkdirAll(dropIns, 0o755); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(root, "usr/share/katatrace/hybrid-vsock.conf"))
	if err != nil {
		t.Fatalf("make install did not install the hybrid-vsock drop-in: %v", err)
	}
	if err := os.WriteFile(filepath.Join(dropIns, "hybrid-vsock.conf"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Log("with hybrid-vsock.conf:")
	rate(root, "vsock-to-udp-server.service")
}

// TestInstallGuestLeavesASyslogDaemonAlone: an image with rsyslog enabled
// the usual way (its alias /etc/systemd/system/syslog.service) keeps it:
// make install-guest says so and enables neither the journal relay nor
// journald's forwarding drop-in (the relay would fail there: fd 3 is not
// its socket). An image without one gets both.
func TestInstallGuestLeavesASyslogDaemonAlone(t *testing.T) {
	repo, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	for _, rsyslog := range []bool{true, false} {
		root := t.TempDir()
		if rsyslog {
			if err := os.MkdirAll(filepath.Join(root, "etc/systemd/system"), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink("/lib/systemd/system/rsyslog.service", filepath.Join(root, "etc/systemd/system/syslog.service")); err != nil {
				t.Fatal(err)
			}
		}
		out, err := exec.Command("make", "-C", repo, "--no-print-directory", "install-guest", "DESTDIR="+root, "PREFIX=/usr").CombinedOutput()
		if err != nil {
			t.Fatalf("make install-guest: %v\n%s", err, out)
		}
		units := filepath.Join(root, "usr/lib/systemd/system")
		_, wantsErr := os.Lstat(filepath.Join(units, "kata-containers.target.wants/kata-journald-host-redirect.service"))
		alias, _ := os.Readlink(filepath.Join(units, "syslog.service"))
		_, dropInErr := os.Stat(filepath.Join(root, "usr/lib/systemd/journald.conf.d/katatrace.conf"))
		said := strings.Contains(string(out), "/etc/systemd/system/syslog.service is a syslog daemon's (rsyslog.service)")
		_, relayErr := os.Stat(filepath.Join(units, "kata-journald-host-redirect.service"))
		switch {
		case relayErr != nil:
			t.Fatalf("rsyslog %v: the journal relay's unit is not installed", rsyslog)
		case rsyslog && (wantsErr == nil || alias != "" || dropInErr == nil || !said):
			t.Fatalf("with rsyslog: enabled %v, alias %q, drop-in %v, said %v\n%s", wantsErr == nil, alias, dropInErr == nil, said, out)
		case !rsyslog && (wantsErr != nil || alias != "kata-journald-host-redirect.service" || dropInErr != nil || said):
			t.Fatalf("without a syslog daemon: enabled %v, alias %q, drop-in %v, said %v\n%s", wantsErr == nil, alias, dropInErr == nil, said, out)
		}
	}
}
