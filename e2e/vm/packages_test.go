package vm

import (
	"encoding/hex"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/katatrace/katatrace/internal/katatest"
	"github.com/katatrace/katatrace/kataspan"
)

// packagesIn builds the host packages at versions 1.0.0 and 1.0.1 (make
// packages, each binary saying its version) into the guest root's
// /usr/lib/katatrace-test/packages, with the test's unit and script
// (testdata/guest/upgrade). The binaries, the staged trees and the
// packages are the test's own: make packages writes nothing in the repo's
// bin/ or dist/, which the e2e image tests, run beside this, read.
func packagesIn(t *testing.T) func(root string) {
	return func(root string) {
		repo, err := filepath.Abs("../..")
		must(t, err)
		dst := filepath.Join(root, "usr/lib/katatrace-test/packages")
		must(t, os.MkdirAll(dst, 0o755))
		tmp := t.TempDir()
		for _, v := range []string{"1.0.0", "1.0.1"} {
			bin, dist := filepath.Join(tmp, "katatrace-"+v), filepath.Join(tmp, "dist-"+v)
			run(t, repo, "env", "CGO_ENABLED=0", "go", "build", "-trimpath", "-ldflags", "-s -w -X main.version="+v, "-o", bin, ".")
			run(t, repo, "make", "--no-print-directory", "packages", "PKG_VERSION="+v, "BIN_SRC="+bin,
				"PKG_DIST="+dist, "PKG_STAGE="+filepath.Join(tmp, "stage-"+v))
			debs, err := filepath.Glob(filepath.Join(dist, "*_"+v+"-1_*.deb"))
			must(t, err)
			if len(debs) != 3 {
				t.Fatalf("make packages PKG_VERSION=%s made %q, want 3 .debs", v, debs)
			}
			for _, d := range debs {
				copyFile(t, d, filepath.Join(dst, filepath.Base(d)), 0o644)
			}
		}
		copyFile(t, "testdata/guest/upgrade", filepath.Join(root, "usr/lib/katatrace-test/upgrade"), 0o755)
		copyFile(t, "testdata/guest/katatrace-test-upgrade.service", filepath.Join(root, "etc/systemd/system/katatrace-test-upgrade.service"), 0o644)
	}
}

var upgradeRE = regexp.MustCompile(`katatrace-test: upgrade installed (\S+); pids (\d+) (\d+) (\d+); state (\S+); enabled (\S+); automatic restarts (\d+)`)

// TestVMSystemdPackageUpgrade installs the host packages with dpkg -i
// over the running kata-trace-forwarder.service, in a Debian systemd
// guest, connects a Kata agent (kataagent, over real AF_VSOCK), and
// upgrades the packages to a higher version: the first install leaves the
// running unit as it is, the upgrade restarts it (a new process, never a
// stop), the agent's one connection is handed over, and every span it
// sends before and after arrives. The 1.x agent's static trace (through
// the host relays' units, restarted by the same upgrade) arrives whole.
func TestVMSystemdPackageUpgrade(t *testing.T) {
	g := setupSystemdWith(t, true, packagesIn(t))
	h := startHost(t, g.katatrace)
	r := g.boot(t, h, systemdBase+"agent.trace=1 systemd.setenv=TESTAGENT_SPANS=300 systemd.setenv=TESTAGENT_HOLD=600000 "+
		"systemd.wants=katatrace-test-upgrade.service systemd.wants=katatrace-test-stop.service")
	checkSystemdRun(t, h, r, 300)

	m := upgradeRE.FindStringSubmatch(r.console)
	if m == nil {
		t.Fatalf("the console has no upgrade report (katatrace-test-upgrade.service):\n%s", r.console)
	}
	version, orig, first, after := m[1], m[2], m[3], m[4]
	if version != "1.0.1-1" || m[5] != "active" || m[6] != "enabled" || m[7] != "0" {
		t.Errorf("after the upgrade: %q, want version 1.0.1-1, the unit active, enabled, never restarted by systemd", m[0])
	}
	if orig != first {
		t.Errorf("the first install changed the running forwarder (pid %s, then %s): it must leave it running", orig, first)
	}
	if first == after {
		t.Errorf("the upgrade did not restart the forwarder (pid %s before and after)", after)
	}
	if agent := regexp.MustCompile(`kataagent: (connection open, \d+ writes taken, none failed|write failed.*|the host closed.*)`).FindAllStringSubmatch(r.console, -1); len(agent) != 1 ||
		!strings.HasPrefix(agent[0][1], "connection open") {
		t.Errorf("the agent's connection: %q", agent)
	}
	frames := katatest.Frames(t, "bincode-otel014-tracing")
	first0, err := kataspan.Decode(katatest.WithFirstByte(frames[:1], 165)[0])
	must(t, err)
	id := hex.EncodeToString(first0.TraceID[:])
	n := 0
	for _, s := range h.Spans(t) {
		if s.Service == "kata3-agent" && s.TraceID == id {
			n++
		}
	}
	if n != len(frames) {
		t.Errorf("the agent's trace %s: %d spans arrived across the upgrade, want %d", id, n, len(frames))
	}
	jb, err := os.ReadFile(g.journal)
	must(t, err)
	if !strings.Contains(string(jb), "handed over to the next process") {
		t.Error("the forwarder's journal does not say it handed over to the next process")
	}
	if strings.Contains(string(jb), "agent's connection closed") {
		t.Error("the forwarder closed an agent's connection")
	}
	t.Logf("upgrade: %s", m[0])
}
