package roles_test

import (
	"encoding/binary"
	"fmt"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/katatrace/katatrace/internal/testutil"
)

// TestHostKilledMidStreamLosesNothing: while a guest relay carries 4,000
// datagrams/s, its host relay is SIGKILLed three times and started again.
// What was in flight when the host died is resent from the guest's queue
// (protocol v2), so every datagram arrives; what the dead host had already
// handed on is not handed on twice once it restarts, save for a batch it
// handed on but did not live to confirm.
func TestHostKilledMidStreamLosesNothing(t *testing.T) {
	dir := testutil.SockDir(t)
	host := filepath.Join(dir, "h_6831")
	sink := testutil.NewUDPSink(t)
	startHost := func() *testutil.Proc {
		hp := start(t, nil, "vsock-to-udp-server", "--from", "unix://"+host, "--to", sink.Addr())
		hp.WaitLog("listening")
		return hp
	}
	hp := startHost()
	port := testutil.FreePort(t, "udp")
	gp := start(t, nil, "jaeger-client-socat-redirector", "--from", fmt.Sprintf("udp://127.0.0.1:%d", port),
		"--to", "unix://"+host, "--backoff-max", "100ms")
	gp.WaitLog("connected to host")
	c := udpSender(t, port)

	const rate, total = 4000, 16000
	kills := map[int]bool{total / 5: true, 2 * total / 5: true, 3 * total / 5: true}
	start := time.Now()
	for i := range total {
		if kills[i] {
			hp.Signal(syscall.SIGKILL)
			hp.Wait(10 * time.Second)
			time.Sleep(200 * time.Millisecond) // the host is away; the guest queues
			hp = startHost()
		}
		p := make([]byte, 200)
		binary.BigEndian.PutUint32(p, uint32(i))
		if _, err := c.Write(p); err != nil {
			t.Fatal(err)
		}
		if ahead := time.Until(start.Add(time.Duration(i+1) * time.Second / rate)); ahead > 0 {
			time.Sleep(ahead)
		}
	}
	gp.Signal(syscall.SIGTERM)
	if code := gp.Wait(20 * time.Second); code != 0 {
		t.Fatalf("guest relay exit %d\n%s", code, gp.Stderr.String())
	}
	got := sink.Quiet(300 * time.Millisecond)
	seen := make([]int, total)
	for _, p := range got {
		seen[binary.BigEndian.Uint32(p)]++
	}
	lost, dups := 0, 0
	for _, n := range seen {
		if n == 0 {
			lost++
		}
		dups += max(n-1, 0)
	}
	t.Logf("sent %d, delivered %d (%d distinct), lost %d, duplicated %d, across 3 host kills", total, len(got), total-lost, lost, dups)
	if lost != 0 {
		t.Fatalf("%d datagrams lost across host kills\nguest:\n%s", lost, gp.Stderr.String())
	}
}
