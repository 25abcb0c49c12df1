package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/katatrace/katatrace/internal/testutil"
)

// noHugePageMappings counts pid's writable anonymous mappings that refuse
// transparent huge pages (VmFlags nh).
func noHugePageMappings(t *testing.T, pid int) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps", pid))
	if err != nil {
		t.Fatal(err)
	}
	n, anonRW := 0, false
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		switch {
		case len(f) >= 5 && strings.Contains(f[0], "-") && len(f[1]) == 4:
			anonRW = len(f) == 5 && f[1][1] == 'w' // no path: anonymous
		case len(f) > 0 && f[0] == "VmFlags:" && anonRW && strings.Contains(l, " nh"):
			n++
		}
	}
	return n
}

// TestHeapWithoutHugePages: the built binary keeps transparent huge pages
// off its Go heap by default (make build's GODEBUG default disablethp=1),
// so that a guest kernel that gives them to every process (THP "always")
// does not make a relay's small heap resident in 2 MiB pages; GODEBUG in
// the environment still decides.
func TestHeapWithoutHugePages(t *testing.T) {
	bin, _ := binaries(t)
	count := func(env ...string) int {
		port := testutil.FreePort(t, "udp")
		p := testutil.Start(t, env, bin, "jaeger-client-socat-redirector",
			"--from", fmt.Sprintf("udp://127.0.0.1:%d", port),
			"--to", "unix://"+filepath.Join(t.TempDir(), "no-host"))
		p.WaitLog("host not reachable")
		n := noHugePageMappings(t, p.Cmd.Process.Pid)
		p.Signal(os.Interrupt)
		p.Wait(15 * time.Second)
		return n
	}
	def, on := count(), count("GODEBUG=disablethp=0")
	t.Logf("writable anonymous mappings without huge pages: %d by default, %d with GODEBUG=disablethp=0", def, on)
	if def <= on {
		t.Fatalf("the heap is not kept from huge pages by default (%d mappings nh, %d with disablethp=0): is -X runtime.godebugDefault=disablethp=1 in make build's LDFLAGS?", def, on)
	}
}
