package roles_test

import (
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/katatrace/katatrace/internal/jaegertest"
	"github.com/katatrace/katatrace/internal/testutil"
)

// TestHostStopsLoseNothingIntoASlowCollector: a v2 guest relay streams
// spans, one a datagram, 22 a second (never quiet for the 50 ms that ended
// a drain before; within what the collector sink's two workers take, even
// under -race), through a host relay (no file
// descriptor store) to a Jaeger collector that answers each request
// after 50 ms; the host is stopped with SIGTERM (--drain-timeout 2s) and
// started again four times while the guest keeps sending. Each stop says
// it stopped (no drain cut short, nothing lost), and every span reaches
// the collector: what a stopping host confirmed, its sink delivered
// within its share of the bound; what it did not, the guest sent again to
// the next host.
func TestHostStopsLoseNothingIntoASlowCollector(t *testing.T) {
	const total, stops = 400, 4
	col := jaegertest.NewCollector(t, 50*time.Millisecond)
	dgs := jaegertest.OneSpanEach(t, "stops", total)
	path := filepath.Join(testutil.SockDir(t), "h_6831")
	startHost := func() *testutil.Proc {
		p := start(t, nil, "vsock-to-udp-server", "--from", "unix://"+path, "--to", col.URL, "--drain-timeout", "2s")
		p.WaitLog("msg=ready")
		return p
	}
	hp := startHost()
	gp, c := guestRelay(t, path, 0)

	// The guest's client sends on, whatever the host does.
	var sent atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(45 * time.Millisecond)
		defer tick.Stop()
		for _, p := range dgs {
			<-tick.C
			if _, err := c.Write(p); err != nil {
				t.Error(err)
				return
			}
			sent.Add(1)
		}
	}()
	for k := 1; k <= stops; k++ {
		testutil.Eventually(t, 60*time.Second, "the client sending", func() bool { return sent.Load() >= int64(k*total/(stops+1)) })
		began := time.Now()
		hp.Signal(syscall.SIGTERM)
		code := hp.Wait(10 * time.Second)
		out := hp.Stderr.String()
		t.Logf("stop %d, at datagram %d: exit %d after %v", k, sent.Load(), code, time.Since(began).Round(time.Millisecond))
		if code != 0 || !strings.Contains(out, "msg=stopped") || strings.Contains(out, "drain incomplete") || strings.Contains(out, "lost") {
			t.Errorf("stop %d: exit %d; want a clean stop that lost nothing:\n%s", k, code, out)
		}
		hp = startHost()
	}
	<-done
	stopGuest(t, gp) // its drain's flush is answered once the collector took everything
	deadline := time.Now().Add(30 * time.Second)
	for n, _ := col.Spans(); n < total; n, _ = col.Spans() {
		if time.Now().After(deadline) {
			t.Fatalf("%d of the %d spans sent reached the collector", n, total)
		}
		time.Sleep(10 * time.Millisecond)
	}
	_, twice := col.Spans()
	t.Logf("%d spans sent, all at the collector, %d of them twice (handed on by a stopping host after its last confirmation)", total, twice)
	hp.Signal(syscall.SIGTERM)
	if code := hp.Wait(10 * time.Second); code != 0 {
		t.Fatalf("host exit %d\n%s", code, hp.Stderr.String())
	}
}
