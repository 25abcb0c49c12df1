package vm

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/katatrace/katatrace/internal/katatest"
	"github.com/katatrace/katatrace/internal/testhost"
	"github.com/katatrace/katatrace/kataspan"
	"github.com/katatrace/katatrace/sink"
)

// systemdGuest is a Debian systemd root with katatrace put in by make
// install alone, Kata 1.x's units, and the test's own units and agent.
type systemdGuest struct {
	*guest
	journal string // the file behind ttyS2
}

// setupSystemd builds the guest's initramfs from the cached root tar
// (scripts/build-guest-root.sh). It needs root: the tar holds device nodes
// and files of other owners.
func setupSystemd(t *testing.T) *systemdGuest { return setupSystemdWith(t, true) }

// setupSystemdWith builds the guest with katatrace's guest side in it, or,
// for a measurement's baseline, without: the agent then runs bare under
// Kata's own units (the test's in-guest host relays stay in both). extra
// puts a test's own files in the root before it is packed.
func setupSystemdWith(t *testing.T, katatrace bool, extra ...func(root string)) *systemdGuest {
	g := setup(t)
	need := func(what, why string) {
		if os.Getenv("KATATRACE_REQUIRE_VM") == "1" {
			t.Fatalf("%s is missing (%s), and KATATRACE_REQUIRE_VM=1", what, why)
		}
		t.Skipf("systemd guest test skipped: %s is missing (%s)", what, why)
	}
	cache := filepath.Dir(g.kernel)
	tarball := os.Getenv("KATATRACE_VM_ROOT")
	if tarball == "" {
		tarball = filepath.Join(cache, "guest-root.tar")
	}
	if _, err := os.Stat(tarball); err != nil {
		need("the guest root "+tarball, "scripts/build-guest-root.sh, or set KATATRACE_VM_ROOT")
	}
	if os.Geteuid() != 0 {
		need("root", "unpacking a root file system needs it")
	}
	root := filepath.Join(t.TempDir(), "root")
	must(t, os.Mkdir(root, 0o755))
	run(t, "", "tar", "-C", root, "-xf", tarball)

	// katatrace as an image builder puts it in: make install, nothing else.
	repo, err := filepath.Abs("../..")
	must(t, err)
	run(t, repo, "make", "--no-print-directory", "install", "DESTDIR="+root, "PREFIX=/usr")

	// Kata 1.x's units, as osbuilder installs them (and its tmp.mount,
	// which Debian keeps out of the unit path).
	units := filepath.Join(root, "usr/lib/systemd/system")
	for _, f := range []string{"kata-containers.target", "kata-agent.service"} {
		copyFile(t, filepath.Join("testdata/kata", f), filepath.Join(units, f), 0o644)
	}
	copyFile(t, filepath.Join(root, "usr/share/systemd/tmp.mount"), filepath.Join(root, "etc/systemd/system/tmp.mount"), 0o644)

	// The test's own pieces: the agent, the vsock modules, the in-guest
	// host relays and their uplinks, the report.
	lib := filepath.Join(root, "usr/lib/katatrace-test")
	must(t, os.MkdirAll(lib, 0o755))
	agent := filepath.Join(filepath.Dir(g.initrd), "agent")
	copyFile(t, agent, filepath.Join(lib, "testagent"), 0o755)
	// A Kata 2.x+ agent's exporter, and the streams Kata's wrote, for the
	// shipped kata-trace-forwarder.service (katatrace-test-forwarder).
	build := exec.Command("go", "build", "-trimpath", "-o", filepath.Join(lib, "kataagent"), "./kataagent")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build kataagent: %v\n%s", err, out)
	}
	for _, name := range kataStreams {
		copyFile(t, filepath.Join("..", "..", "kataspan", "testdata", name+".bin"), filepath.Join(lib, name+".bin"), 0o644)
	}
	copyFile(t, "testdata/guest/forwarder", filepath.Join(lib, "forwarder"), 0o755)
	copyFile(t, "testdata/guest/hybrid", filepath.Join(lib, "hybrid"), 0o755)
	copyFile(t, "testdata/guest/kata-agent", filepath.Join(root, "usr/bin/kata-agent"), 0o755)
	copyFile(t, "testdata/guest/report", filepath.Join(lib, "report"), 0o755)
	for _, m := range guestModules {
		src := filepath.Join(cache, "modules", m+".ko")
		if _, err := os.Stat(src); err != nil {
			need("the module "+src, "scripts/fetch-vm-kernel.sh fetches it with the kernel")
		}
		copyFile(t, src, filepath.Join(lib, m+".ko"), 0o644)
	}
	etc := filepath.Join(root, "etc/systemd/system")
	wants := filepath.Join(etc, "kata-containers.target.wants")
	must(t, os.MkdirAll(wants, 0o755))
	for _, u := range []string{"vsock", "uplink", "report", "final", "stop", "memory", "forwarder", "hybrid"} {
		name := "katatrace-test-" + u + ".service"
		copyFile(t, filepath.Join("testdata/guest", name), filepath.Join(etc, name), 0o644)
		if u != "stop" && u != "memory" && u != "forwarder" && u != "hybrid" {
			must(t, os.Symlink("../"+name, filepath.Join(wants, name)))
		}
	}
	// An operator may enable every shipped guest unit: the shim must still
	// own 6831, and nothing may fail.
	must(t, os.Symlink("/usr/lib/systemd/system/jaeger-client-socat-redirector.service",
		filepath.Join(wants, "jaeger-client-socat-redirector.service")))
	// The host relays run inside the guest, as the shipped, sandboxed host
	// units, on real vsock: what they hand on goes up the serial uplink
	// (traces) or out on ttyS2 (journal lines).
	for _, u := range []string{"vsock-to-udp-server.service", "vsock-to-text-server.service", "kata-trace-forwarder.service"} {
		must(t, os.Symlink("/usr/lib/systemd/system/"+u, filepath.Join(wants, u)))
	}
	// Kata agents' spans go up the uplink as Jaeger datagrams, named apart
	// from the 1.x agent's; the shipped unit's own --from list serves them
	// (vsock and every hybrid-vsock tree: katatrace-test-hybrid).
	dropIn(t, etc, "kata-trace-forwarder.service", "[Unit]\nAfter=katatrace-test-vsock.service\n"+
		"[Service]\nExecStart=\n"+forwarderExecStart(t, filepath.Join(units, "kata-trace-forwarder.service"))+"\n")
	// The shipped hybrid-vsock drop-in, as the guide has an operator copy
	// it, on a machine that has run no VM (no /run/vc but tmpfiles.d's):
	// the relay starts at boot, and listens in a VM directory made later.
	copyFile(t, filepath.Join(root, "usr/share/katatrace/hybrid-vsock.conf"),
		filepath.Join(etc, "vsock-to-udp-server.service.d/hybrid-vsock.conf"), 0o644)
	dropIn(t, etc, "vsock-to-udp-server.service", "[Unit]\nAfter=katatrace-test-vsock.service\nBefore=kata-agent.service\n"+
		"[Service]\nExecStart=\nExecStart=/usr/bin/vsock-to-udp-server --from vsock://any:6831 --to udp://127.0.0.1:16831 "+
		"--from unix:///run/vc/firecracker/*/root/kata.hvsock_6831\n")
	dropIn(t, etc, "vsock-to-text-server.service", "[Unit]\nAfter=katatrace-test-vsock.service\nBefore=kata-journald-host-redirect.service kata-agent.service\n"+
		// Its lines go to a tty here (on a host, to the journal, which in
		// this guest would loop back through the journal relay): a tty is
		// a device the sandbox keeps from it, so only that is let through.
		"[Service]\nStandardOutput=file:/dev/ttyS2\nStandardError=journal\n"+
		"DynamicUser=no\nPrivateUsers=no\nPrivateDevices=no\nDevicePolicy=auto\n")
	// This machine's vsock host is not the test's: the guest relays dial
	// the in-guest host relays through CID 1.
	dropIn(t, etc, "kata-agent.service", "[Service]\nEnvironment=KATATRACE_TO=vsock://1:6831\n")
	dropIn(t, etc, "kata-journald-host-redirect.service", "[Service]\nEnvironment=KATATRACE_TO=vsock://1:5140\n")
	must(t, os.Symlink("/lib/systemd/systemd", filepath.Join(root, "init")))
	if !katatrace {
		for _, f := range []string{
			"usr/lib/systemd/system/kata-agent.service.d", "usr/lib/systemd/system/syslog.service",
			"usr/lib/systemd/system/kata-containers.target.wants/kata-journald-host-redirect.service",
			"usr/lib/systemd/journald.conf.d/katatrace.conf",
			"etc/systemd/system/kata-containers.target.wants/jaeger-client-socat-redirector.service",
		} {
			must(t, os.RemoveAll(filepath.Join(root, f)))
		}
	}

	for _, f := range extra {
		f(root)
	}
	g.initrd = filepath.Join(t.TempDir(), "root.cpio")
	pack(t, root, g.initrd)
	// The uplink is a virtio-serial port, the channel of hypervisors
	// without vsock (katatrace-test-uplink.service).
	g.virtioPort = "katatrace.0"
	return &systemdGuest{guest: g, journal: filepath.Join(t.TempDir(), "journal.log")}
}

// forwarderExecStart is the installed forwarder unit's ExecStart= (its
// continued lines joined), sending to the uplink instead of OTLP: the
// test serves what the shipped unit listens on. The unit gives no
// destination (a drop-in's KATATRACE_TO or OTEL_* would conflict with
// one), so the uplink's is added.
func forwarderExecStart(t *testing.T, unit string) string {
	t.Helper()
	b, err := os.ReadFile(unit)
	must(t, err)
	text := strings.ReplaceAll(string(b), "\\\n", " ")
	for _, line := range strings.Split(text, "\n") {
		if strings.HasPrefix(line, "ExecStart=") {
			for _, dest := range []string{"--to", "--otlp-endpoint", "--jaeger-", "--dump-only"} {
				if strings.Contains(line, dest) {
					t.Fatalf("the forwarder unit's ExecStart gives a destination (%s): %s", dest, line)
				}
			}
			return strings.TrimRight(line, " ") + " --to udp://127.0.0.1:16831 --trace-name kata3-agent"
		}
	}
	t.Fatalf("%s has no ExecStart=", unit)
	return ""
}

// guestModules are the kernel package's modules the systemd guest loads
// (katatrace-test-vsock.service), in this order: real AF_VSOCK through
// CID 1, and the virtio-serial port of the uplink.
var guestModules = []string{"vsock", "vmw_vsock_virtio_transport_common", "vsock_loopback",
	"virtio_ring", "virtio", "virtio_pci_modern_dev", "virtio_pci_legacy_dev", "virtio_pci", "virtio_console"}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func run(t *testing.T, dir, name string, args ...string) {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

func copyFile(t *testing.T, src, dst string, mode os.FileMode) {
	t.Helper()
	b, err := os.ReadFile(src)
	must(t, err)
	must(t, os.MkdirAll(filepath.Dir(dst), 0o755))
	must(t, os.WriteFile(dst, b, mode))
}

func dropIn(t *testing.T, etc, unit, text string) {
	t.Helper()
	dir := filepath.Join(etc, unit+".d")
	must(t, os.MkdirAll(dir, 0o755))
	must(t, os.WriteFile(filepath.Join(dir, "katatrace-test.conf"), []byte(text), 0o644))
}

// pack writes root as a newc initramfs with the cpio tool.
func pack(t *testing.T, root, out string) {
	t.Helper()
	f, err := os.Create(out)
	must(t, err)
	defer f.Close()
	list, err := exec.Command("sh", "-c", "cd '"+root+"' && find . -mindepth 1").Output()
	must(t, err)
	cmd := exec.Command("cpio", "--quiet", "-o", "-H", "newc")
	cmd.Dir, cmd.Stdin, cmd.Stdout = root, bytes.NewReader(list), f
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("cpio: %v\n%s", err, stderr.String())
	}
}

// boot runs the guest until it powers itself off, ttyS2 (the in-guest
// text server's output) a file.
func (g *systemdGuest) boot(t *testing.T, h *testhost.Host, cmdline string) bootResult {
	t.Helper()
	r := g.guest.boot(t, h, 1024, cmdline, g.journal)
	if dir := os.Getenv("KATATRACE_VM_LOGS"); dir != "" {
		j, _ := os.ReadFile(g.journal)
		_ = os.WriteFile(filepath.Join(dir, t.Name()+".journal.log"), j, 0o644)
	}
	t.Cleanup(func() {
		if t.Failed() {
			j, _ := os.ReadFile(g.journal)
			t.Logf("journal (ttyS2):\n%s", j)
		}
	})
	return r
}

const systemdBase = "console=ttyS0 panic=-1 printk.time=1 systemd.unit=kata-containers.target systemd.show_status=1 "

var (
	reachedRE      = regexp.MustCompile(`katatrace-test: target reached at ([0-9.]+)`)
	doneRE         = regexp.MustCompile(`testagent: done at uptime ([0-9.]+)`)
	powerRE        = regexp.MustCompile(`\[\s*([0-9.]+)\] reboot: Power down`)
	memoryRE       = regexp.MustCompile(`katatrace-test: memory used (\d+) kB; shim pid \d+ rss (\d+) kB pss (\d+) kB`)
	journalRelayRE = regexp.MustCompile(`journal relay rss \d+ kB pss \d+ kB`)
	failedRE       = regexp.MustCompile(`katatrace-test: failed units: \[(.*)\]`)
	relayingRE     = regexp.MustCompile(`msg=relaying role=kata-agent-tracer`)
)

func seconds(t *testing.T, re *regexp.Regexp, s string) float64 {
	t.Helper()
	m := re.FindStringSubmatch(s)
	if m == nil {
		t.Fatalf("the console has no %q", re)
	}
	f, err := strconv.ParseFloat(m[1], 64)
	must(t, err)
	return f
}

// checkSystemdRun checks what every static-tracing boot must show: the VM
// powered itself off, every span arrived under its root, the relay was
// bound before the agent ran, and no unit failed.
func checkSystemdRun(t *testing.T, h *testhost.Host, r bootResult, spans int) map[string][]sink.SpanRecord {
	t.Helper()
	if r.code != 0 {
		t.Fatalf("QEMU exit %d after %v: the VM did not power itself off", r.code, r.took)
	}
	if !powerRE.MatchString(r.console) {
		t.Fatal("the VM ended without the kernel's power-down")
	}
	byOp := checkAgentTrace(t, h, spans)
	for _, op := range []string{"boot", "agent-start", "agent-run", "shutdown"} {
		if len(byOp["kata-agent/"+op]) != 1 {
			t.Errorf("shim span %s: %d, want 1", op, len(byOp["kata-agent/"+op]))
		}
	}
	// Readiness: the relay was bound before the agent ran.
	if !strings.Contains(r.console, "testagent: relay already bound at start") {
		t.Error("the agent started before the shim's relay was bound")
	}
	if i, j := relayingRE.FindStringIndex(r.console), strings.Index(r.console, "testagent: pid"); i == nil || j < i[0] {
		t.Error("the shim's relaying line does not come before the agent's start")
	}
	if !strings.Contains(r.console, `msg="asked systemd to end the VM" role=kata-agent-tracer action=poweroff`) {
		t.Error("the shim did not ask systemd to power off")
	}
	if strings.Contains(r.console, "relay not started") || strings.Contains(r.console, "level=ERROR") {
		t.Error("a katatrace error on the console")
	}
	if m := failedRE.FindStringSubmatch(r.console); m == nil || strings.TrimSpace(m[1]) != "" {
		t.Errorf("failed units at shutdown: %q", m)
	}
	return byOp
}

// TestVMSystemdStaticTracing boots a stock Debian systemd guest with Kata
// 1.x's units and katatrace from make install, agent.trace=isolated: every
// span and the root arrive over real vsock, the journal arrives one line
// per message, no unit fails, and the VM powers itself off.
func TestVMSystemdStaticTracing(t *testing.T) {
	g := setupSystemd(t)
	h := startHost(t, g.katatrace)
	const spans = 1000
	r := g.boot(t, h, systemdBase+"agent.trace=isolated")
	checkSystemdRun(t, h, r, spans)

	// The journal: one line per message, multi-line messages escaped.
	jb, err := os.ReadFile(g.journal)
	must(t, err)
	journal := strings.ReplaceAll(string(jb), "\r\n", "\n")
	for _, want := range []string{
		"Reached target kata-containers.target",
		`katatrace-test: first line\nsecond line`,
	} {
		if !strings.Contains(journal, want) {
			t.Errorf("journal lines lack %q", want)
		}
	}
	for _, line := range strings.Split(strings.TrimSpace(journal), "\n") {
		if !strings.HasPrefix(line, "vsock:") {
			t.Errorf("journal line without its guest's name: %q", line)
			break
		}
	}

	// The hybrid-vsock drop-in: started at boot, listening once a VM's
	// directory appeared, reloaded, never restarted.
	if want := "katatrace-test: hybrid socket present; reload ok; relay active restarts 0"; !strings.Contains(r.console, want) {
		t.Errorf("the console lacks %q", want)
	}

	reached, done, off := seconds(t, reachedRE, r.console), seconds(t, doneRE, r.console), seconds(t, powerRE, r.console)
	mem := memoryRE.FindStringSubmatch(r.console)
	t.Logf("QEMU (TCG) ran %v; kata-containers.target at %.2fs uptime; agent exit to power-off %.2fs with %d spans; memory %s",
		r.took.Round(time.Millisecond), reached, off-done, spans, fmt.Sprint(mem[1:]))
}

// TestVMSystemdStopIsNoFailure stops the agent's unit while the agent runs,
// as the runtime or an operator would: the agent gets SIGTERM through the
// shim, the trace is flushed, the VM powers off, and no unit failed.
// Before the stop, in the same boot, a Kata 2.x+ agent keeps its one
// connection to the shipped kata-trace-forwarder.service through its
// restarts and crashes (checkForwarderKeepsAgents), and the unit serves
// VM directories of both runtimes as Kata makes them
// (checkForwarderServesVMDirectories).
// Before the stop, 12 s after the agent (300 spans, then waiting) started,
// it reads every guest process's memory, katatrace's and the seed's socat
// pair's beside it: figures for the record, not a check.
func TestVMSystemdStopIsNoFailure(t *testing.T) {
	g := setupSystemd(t)
	h := startHost(t, g.katatrace)
	r := g.boot(t, h, systemdBase+"agent.trace=1 systemd.setenv=TESTAGENT_SPANS=300 systemd.setenv=TESTAGENT_HOLD=600000 "+
		"systemd.wants=katatrace-test-memory.service systemd.wants=katatrace-test-stop.service systemd.wants=katatrace-test-forwarder.service "+
		"systemd.wants=katatrace-test-hybrid.service")
	byOp := checkSystemdRun(t, h, r, 300)
	checkForwarderKeepsAgents(t, h, r, g.journal)
	checkForwarderServesVMDirectories(t, h, r, g.journal)
	logGuestMemory(t, r.console)
	if sd := byOp["kata-agent/shutdown"][0]; sd.Tags["reason"] != "stopped by terminated" {
		t.Errorf("shutdown span reason %v, want the stop", sd.Tags["reason"])
	}
	if strings.Contains(r.console, "testagent: done") {
		t.Error("the agent ran to its end: the stop did not reach it")
	}
}

var (
	processRE = regexp.MustCompile(`katatrace-test: process (\S+) pid \d+ rss (\d+) kB pss (\d+) kB anon (\d+) kB`)
	mapRE     = regexp.MustCompile(`katatrace-test: (?:map|startup) .*`)
)

// logGuestMemory logs the memory lines of the report: each guest
// process's Rss, Pss and anonymous memory (smaps_rollup), katatrace's (the
// shim's and the journal relay's: what this image runs) and socat's
// together, the guest Jaeger relay's apart, the largest mappings of
// katatrace's, and each guest role's start-up time. Figures, not
// assertions: they go in the output.
func logGuestMemory(t *testing.T, console string) {
	t.Helper()
	var kt, so [3]int
	var b strings.Builder
	for _, m := range processRE.FindAllStringSubmatch(console, -1) {
		sum := &kt
		switch {
		case strings.HasPrefix(m[1], "socat"):
			sum = &so
		case strings.HasPrefix(m[1], "apart"):
			sum = &[3]int{} // not part of this image's setup
		}
		for i := range sum {
			n, _ := strconv.Atoi(m[2+i])
			sum[i] += n
		}
		fmt.Fprintf(&b, "  %-22s rss %6s kB  pss %6s kB  anon %6s kB\n", m[1], m[2], m[3], m[4])
	}
	if b.Len() == 0 {
		t.Error("the console has no memory lines (katatrace-test-memory.service)")
		return
	}
	fmt.Fprintf(&b, "  %-22s rss %6d kB  pss %6d kB  anon %6d kB\n", "katatrace, together", kt[0], kt[1], kt[2])
	fmt.Fprintf(&b, "  %-22s rss %6d kB  pss %6d kB  anon %6d kB\n", "socat, together", so[0], so[1], so[2])
	for _, m := range mapRE.FindAllString(console, -1) {
		fmt.Fprintf(&b, "  %s\n", strings.TrimPrefix(m, "katatrace-test: "))
	}
	t.Logf("guest memory, 12 s after the agent started:\n%s", b.String())
}

// TestVMSystemdMemoryBaseline measures the guest's memory with and without
// katatrace's guest side, for the record; KATATRACE_VM_MEASURE=1 runs it.
func TestVMSystemdMemoryBaseline(t *testing.T) {
	if os.Getenv("KATATRACE_VM_MEASURE") != "1" {
		t.Skip("a measurement, not a check: KATATRACE_VM_MEASURE=1 runs it")
	}
	for _, with := range []bool{false, true} {
		g := setupSystemdWith(t, with)
		h := startHost(t, g.katatrace)
		r := g.boot(t, h, systemdBase+"agent.trace=isolated")
		m := memoryRE.FindStringSubmatch(r.console)
		if r.code != 0 || m == nil {
			t.Fatalf("katatrace=%v: QEMU exit %d, memory line %q", with, r.code, m)
		}
		t.Logf("katatrace=%v: guest memory used %s kB; agent unit's main process rss %s kB pss %s kB; journal relay %s",
			with, m[1], m[2], m[3], journalRelayRE.FindString(r.console))
	}
}

// kataStreams are the streams Kata's exporter wrote, replayed in the guest
// (kataspan/testdata).
var kataStreams = []string{"json-otel017-tracing", "bincode-otel014-tracing", "json-otel017-api", "bincode-otel014-api"}

var kataAgentRE = regexp.MustCompile(`kataagent: (connection open, \d+ writes taken, none failed|write failed.*|the host closed.*)`)

// checkForwarderKeepsAgents checks what katatrace-test-forwarder did in
// the guest (testdata/guest/forwarder): an agent's one connection to the
// shipped kata-trace-forwarder.service, under real systemd and over real
// AF_VSOCK, kept through a systemctl restart and a systemctl kill -s KILL
// between frames (every span arrives), a restart inside a frame (every
// span arrives) and a kill inside a frame (only that frame is lost: what
// the dead process had read of it); an agent that starts while the
// forwarder is down waits in its kept listener's backlog; no agent ever
// sees a failed write.
func checkForwarderKeepsAgents(t *testing.T, h *testhost.Host, r bootResult, journal string) {
	t.Helper()
	m := kataAgentRE.FindAllStringSubmatch(r.console, -1)
	if len(m) != 2 || !strings.HasPrefix(m[0][1], "connection open") || !strings.HasPrefix(m[1][1], "connection open") {
		t.Errorf("the Kata agents' connections: %q", m)
	}
	byTrace := map[string][]string{}
	for _, s := range h.Spans(t) {
		if s.Service == "kata3-agent" {
			byTrace[s.TraceID] = append(byTrace[s.TraceID], s.Operation)
		}
	}
	for i, name := range kataStreams {
		frames := katatest.Frames(t, name)
		first, err := kataspan.Decode(frames[0])
		must(t, err)
		id := hex.EncodeToString(first.TraceID[:])
		want := len(frames)
		if i == 3 { // SIGKILLed inside its first frame
			want--
			if slices.Contains(byTrace[id], first.Name) {
				t.Errorf("%s: the frame cut by the crash arrived", name)
			}
		}
		if got := len(byTrace[id]); got != want {
			t.Errorf("%s (trace %s): %d spans, want %d: %v", name, id, got, want, byTrace[id])
		}
	}
	// The agent that connected while the forwarder was down (the kept
	// listener's backlog held it), its trace id beginning with '{'.
	if late := byTrace["fe1d14f40b91e3a22a78699aab605a7b"]; len(late) != 6 {
		t.Errorf("the late agent's trace: %d spans, want 6: %v", len(late), late)
	}
	jb, err := os.ReadFile(journal)
	must(t, err)
	for msg, n := range map[string]int{"handed over to the next process": 2, "connection taken up after a restart": 2,
		"connection taken up after a crash": 2, "stream lost its framing": 1} {
		if got := strings.Count(string(jb), msg); got < n {
			t.Errorf("the forwarder's journal has %q %d times, want %d or more", msg, got, n)
		}
	}
	if strings.Contains(string(jb), "agent's connection closed") {
		t.Error("the forwarder closed an agent's connection")
	}
	t.Logf("forwarder in the guest: %s", regexp.MustCompile(`katatrace-test: forwarder .*`).FindString(r.console))
}

var hybridRE = regexp.MustCompile(`katatrace-test: hybrid sent through (\S+?)(?:_10240)?, its directory (\S+ \d+); agent: (.*)`)

// checkForwarderServesVMDirectories checks what katatrace-test-hybrid did
// in the guest (testdata/guest/hybrid): with the shipped forwarder unit
// running (root, no capability, its default --from list), VM directories
// made as Kata makes them (root's, 0750) under the Go runtime's /run/vc
// and runtime-rs's /run/kata each got a listener beside the VMM's
// socket, every span an agent sent through it arrived, and the unit's
// journal names each VM's sandbox ID; a vsock agent's too, read from a
// root-owned stand-in VMM's command line.
func checkForwarderServesVMDirectories(t *testing.T, h *testhost.Host, r bootResult, journal string) {
	t.Helper()
	vms := []struct {
		sock, sandbox string
		traceByte     byte
	}{
		{"/run/vc/vm/c1a0c1a0/clh.sock", "c1a0c1a0", 161},
		{"/run/kata/d4a90b11/root/kata.hvsock", "d4a90b11", 162},
		{"/run/kata/firecracker/f1ec7ac0/root/kata.hvsock", "f1ec7ac0", 163},
		// QEMU: the sandbox from a root-owned stand-in VMM's command line.
		{"vsock://1:10240", "0e1f0e1f", 164},
	}
	said := map[string]string{}
	for _, m := range hybridRE.FindAllStringSubmatch(r.console, -1) {
		said[m[1]] = m[2] + "; " + strings.TrimSpace(m[3])
	}
	byTrace := map[string]int{}
	for _, s := range h.Spans(t) {
		if s.Service == "kata3-agent" {
			byTrace[s.TraceID]++
		}
	}
	jb, err := os.ReadFile(journal)
	must(t, err)
	frames := katatest.Frames(t, "bincode-otel014-tracing")
	for _, vm := range vms {
		dir := "root 750"
		if strings.HasPrefix(vm.sock, "vsock:") {
			dir = "- 0"
		}
		if got, want := said[vm.sock], fmt.Sprintf("%s; connection open, %d writes taken, none failed", dir, 2*len(frames)); got != want {
			t.Errorf("%s: the guest said %q of it, want %q", vm.sock, got, want)
			continue
		}
		first, err := kataspan.Decode(katatest.WithFirstByte(frames[:1], vm.traceByte)[0])
		must(t, err)
		id := hex.EncodeToString(first.TraceID[:])
		if got := byTrace[id]; got != len(frames) {
			t.Errorf("%s (trace %s): %d spans arrived, want %d", vm.sock, id, got, len(frames))
		}
		if !regexp.MustCompile(`kata-trace-forwarder\[\d+\]: .*"sandbox\W{1,8}` + vm.sandbox + `\b`).Match(jb) {
			t.Errorf("the forwarder's journal does not name the sandbox %s (%s)", vm.sandbox, vm.sock)
		}
	}
	t.Logf("forwarder unit, VM directories of both runtimes: %v", said)
}
