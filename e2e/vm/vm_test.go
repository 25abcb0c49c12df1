package vm

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/katatrace/katatrace/internal/testhost"
	"github.com/katatrace/katatrace/internal/testutil"
	"github.com/katatrace/katatrace/sink"
)

// guest is what a VM test needs: QEMU, a kernel, the initramfs.
type guest struct {
	qemu, kernel, initrd, katatrace string
	// virtioPort, when set, carries the host relay's socket on a
	// virtio-serial port of that name (/dev/virtio-ports/NAME), not on
	// ttyS1 (which is then left unconnected, so that ttyS2 stays ttyS2).
	virtioPort string
}

func setup(t *testing.T) *guest {
	t.Helper()
	need := func(what, why string) {
		if os.Getenv("KATATRACE_REQUIRE_VM") == "1" && os.Getenv("KATATRACE_E2E") == "1" {
			t.Fatalf("%s is missing (%s), and KATATRACE_REQUIRE_VM=1", what, why)
		}
		t.Skipf("VM test skipped: %s is missing (%s)", what, why)
	}
	g := &guest{katatrace: os.Getenv("KATATRACE_BIN"), kernel: os.Getenv("KATATRACE_VM_KERNEL")}
	var err error
	if g.qemu, err = exec.LookPath("qemu-system-x86_64"); err != nil {
		need("qemu-system-x86_64", "apt-get install qemu-system-x86")
	}
	if g.kernel == "" {
		g.kernel = filepath.Join("..", "..", "e2e", "vm", ".cache", "vmlinuz")
		if wd, err := os.Getwd(); err == nil {
			g.kernel = filepath.Join(wd, ".cache", "vmlinuz")
		}
	}
	if _, err := os.Stat(g.kernel); err != nil {
		need("the guest kernel "+g.kernel, "scripts/fetch-vm-kernel.sh, or set KATATRACE_VM_KERNEL")
	}
	if _, err := os.Stat(g.katatrace); g.katatrace == "" || err != nil {
		need("the katatrace binary", "make e2e sets KATATRACE_BIN")
	}
	dir := t.TempDir()
	agent := filepath.Join(dir, "agent")
	build := exec.Command("go", "build", "-trimpath", "-o", agent, "./testagent")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build the test agent: %v\n%s", err, out)
	}
	g.initrd = filepath.Join(dir, "initramfs.cpio")
	if err := writeInitramfs(g.initrd, g.katatrace, agent); err != nil {
		t.Fatal(err)
	}
	return g
}

// startHost is the host relay where QEMU connects ttyS1.
func startHost(t *testing.T, katatrace string) *testhost.Host {
	return testhost.Start(t, nil, katatrace, "ttyS1.sock")
}

type bootResult struct {
	code    int
	took    time.Duration
	console string
}

// boot runs the VM until it ends itself (or the bound runs out): ttyS0 is
// the console, ttyS1 the host relay's socket (or see virtioPort), further
// serial ports files.
func (g *guest) boot(t *testing.T, h *testhost.Host, memMB int, cmdline string, files ...string) bootResult {
	t.Helper()
	console := filepath.Join(t.TempDir(), "console.log")
	args := []string{
		"-accel", "tcg", "-M", "pc", "-m", strconv.Itoa(memMB), "-smp", "1", "-nodefaults", "-nic", "none",
		"-no-reboot", "-display", "none",
		"-kernel", g.kernel, "-initrd", g.initrd, "-append", cmdline,
		"-chardev", "file,id=con,path=" + console, "-serial", "chardev:con",
		"-chardev", "socket,id=trace,path=" + h.Sock,
	}
	if g.virtioPort != "" {
		args = append(args, "-serial", "null", "-device", "virtio-serial-pci",
			"-device", "virtserialport,chardev=trace,name="+g.virtioPort)
	} else {
		args = append(args, "-serial", "chardev:trace")
	}
	for i, f := range files {
		args = append(args, "-chardev", fmt.Sprintf("file,id=f%d,path=%s", i, f), "-serial", fmt.Sprintf("chardev:f%d", i))
	}
	start := time.Now()
	p := testutil.Start(t, nil, g.qemu, args...)
	code := p.Wait(8 * time.Minute)
	r := bootResult{code: code, took: time.Since(start)}
	b, _ := os.ReadFile(console)
	r.console = string(b)
	if dir := os.Getenv("KATATRACE_VM_LOGS"); dir != "" {
		// Kept for reading after the test, whatever its outcome.
		_ = os.WriteFile(filepath.Join(dir, t.Name()+".console.log"), b, 0o644)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("console:\n%s", r.console)
		}
	})
	return r
}

const base = "console=ttyS0 panic=-1 rdinit=/bin/kata-agent-tracer KATATRACE_TO=serial:///dev/ttyS1 "

func checkClean(t *testing.T, r bootResult) {
	t.Helper()
	if r.code != 0 {
		t.Fatalf("QEMU exit %d: the VM did not power itself off", r.code)
	}
	if strings.Contains(r.console, "Kernel panic") {
		t.Fatalf("kernel panic:\n%s", firstLine(r.console, "Kernel panic"))
	}
	if !strings.Contains(r.console, "testagent: done") {
		t.Fatal("the agent did not run to its end")
	}
}

// checkAgentTrace checks that every agent span reached the host under the
// shim's one root, and returns the spans by service/operation.
func checkAgentTrace(t *testing.T, h *testhost.Host, spans int) map[string][]sink.SpanRecord {
	t.Helper()
	byOp := map[string][]sink.SpanRecord{}
	for _, s := range h.Spans(t) {
		byOp[s.Service+"/"+s.Operation] = append(byOp[s.Service+"/"+s.Operation], s)
	}
	if n := len(byOp["test-agent/agent-op"]) + len(byOp["test-agent/agent-main"]); n != spans {
		t.Fatalf("%d agent spans reached the host, want %d", n, spans)
	}
	roots := byOp["kata-agent/kata-agent"]
	if len(roots) != 1 || roots[0].ParentID != "" {
		t.Fatalf("root span kata-agent: %+v", roots)
	}
	if m := byOp["test-agent/agent-main"]; m[0].ParentID != roots[0].SpanID {
		t.Fatal("the agent's spans are not under the shim's root")
	}
	return byOp
}

var flushRE = regexp.MustCompile(`relay_flush=(\S+) total=(\S+)`)

func TestVMStaticTracingOverSerial(t *testing.T) {
	g := setup(t)
	h := startHost(t, g.katatrace)
	const spans = 300
	r := g.boot(t, h, 512, base+"agent.trace=isolated -- /bin/agent spans=300 exit=0")
	checkClean(t, r)
	byOp := checkAgentTrace(t, h, spans)
	boot := byOp["kata-agent/boot"]
	if len(boot) != 1 || boot[0].DurationUS <= 0 || boot[0].DurationUS > int64(r.took/time.Microsecond) {
		t.Fatalf("boot span %+v is not a plausible kernel-to-init time (VM ran %v)", boot, r.took)
	}
	m := flushRE.FindStringSubmatch(r.console)
	if m == nil {
		t.Fatal("no shutdown line on the console")
	}
	t.Logf("boot to power-off %v (QEMU, TCG); kernel to init %v; shutdown: relay flush %s of %s",
		r.took.Round(time.Millisecond), time.Duration(boot[0].DurationUS)*time.Microsecond, m[1], m[2])
}

func TestVMBogusTraceStillRunsAgent(t *testing.T) {
	g := setup(t)
	h := startHost(t, g.katatrace)
	r := g.boot(t, h, 512, base+"agent.trace=bogus -- /bin/agent exit=0")
	checkClean(t, r)
	if !strings.Contains(r.console, `agent.trace=\"bogus\" is not a tracing mode: want agent.trace, agent.trace=isolated (or true, 1), agent.trace=collated, or agent.trace=false (or 0)`) {
		t.Fatal("the bad agent.trace was not reported on the console")
	}
	for _, s := range h.Spans(t) {
		if s.Service == "kata-agent" {
			t.Fatalf("untraced shim sent span %s", s.Operation)
		}
	}
}

func TestVMUntracedPowersOff(t *testing.T) {
	g := setup(t)
	h := startHost(t, g.katatrace)
	// The agent command as one quoted kernel parameter, which the kernel
	// hands to init as an environment variable.
	r := g.boot(t, h, 512, base+`KATATRACE_AGENT="/bin/agent exit=7"`)
	checkClean(t, r)
	if !strings.Contains(r.console, "action=poweroff") {
		t.Fatal("the shim did not power off")
	}
}
