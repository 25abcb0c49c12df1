package roles_test

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/katatrace/katatrace/internal/testutil"
	"github.com/katatrace/katatrace/roles"
	"github.com/katatrace/katatrace/wire"
)

func udpSender(t *testing.T, port int) net.Conn {
	c, err := net.Dial("udp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// relayPair runs a host relay (hp) into a UDP sink and a guest relay (gp,
// with flags) connected to it, as processes; the guest reads UDP at port.
func relayPair(t *testing.T, flags ...string) (sink *testutil.UDPSink, port int, hp, gp *testutil.Proc) {
	host := filepath.Join(testutil.SockDir(t), "h_6831")
	sink = testutil.NewUDPSink(t)
	hp = start(t, nil, "vsock-to-udp-server", "--from", "unix://"+host, "--to", sink.Addr())
	hp.WaitLog("listening")
	port = testutil.FreePort(t, "udp")
	gp = start(t, nil, "jaeger-client-socat-redirector", append([]string{"--from", fmt.Sprintf("udp://127.0.0.1:%d", port), "--to", "unix://" + host}, flags...)...)
	gp.WaitLog("connected to host")
	return sink, port, hp, gp
}

// TestGuestRelayDrainsOnSIGTERM runs both relays as processes: what the
// guest relay read before SIGTERM reaches the sink, and it exits 0.
func TestGuestRelayDrainsOnSIGTERM(t *testing.T) {
	sink, port, hp, gp := relayPair(t)
	c := udpSender(t, port)
	const n = 300
	for i := range n {
		c.Write(bytes.Repeat([]byte{byte(i)}, 3000+i))
	}
	gp.Signal(syscall.SIGTERM)
	if code := gp.Wait(10 * time.Second); code != 0 {
		t.Fatalf("guest relay exit %d", code)
	}
	if !strings.Contains(gp.Stderr.String(), "the host confirmed every datagram") {
		t.Errorf("guest did not log a confirmed drain:\n%s", gp.Stderr.String())
	}
	got := sink.WaitFor(n, 5*time.Second)
	if len(got) != n {
		t.Fatalf("sink got %d of %d", len(got), n)
	}
	for i, p := range got {
		if !bytes.Equal(p, bytes.Repeat([]byte{byte(i)}, 3000+i)) {
			t.Fatalf("datagram %d differs", i)
		}
	}
	hp.Signal(syscall.SIGTERM)
	if code := hp.Wait(10 * time.Second); code != 0 {
		t.Fatalf("host relay exit %d", code)
	}
}

// TestTextRelay sends journal-like messages through both text roles.
func TestTextRelay(t *testing.T) {
	dir := testutil.SockDir(t)
	host := filepath.Join(dir, "h_5140")
	in := filepath.Join(dir, "syslog")
	hp := start(t, nil, "vsock-to-text-server", "--from", "unix://"+host)
	hp.WaitLog("listening")
	gp := start(t, nil, "kata-journald-host-redirect", "--from", "unixgram://"+in, "--to", "unix://"+host)
	gp.WaitLog("connected to host")
	c, err := net.Dial("unixgram", in)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	msgs := []string{
		"<30>Nov 25 kata-agent[1]: started\n",
		"<30>no newline",
		"<27>\x1b[2J\x1b]0;owned\x07red \x1b[31malert\x1b[0m\r\n",
		"two\nlines",
	}
	for _, m := range msgs {
		if _, err := c.Write([]byte(m)); err != nil {
			t.Fatal(err)
		}
	}
	want := []string{
		"<30>Nov 25 kata-agent[1]: started",
		"<30>no newline",
		`<27>\x1b[2J\x1b]0;owned\x07red \x1b[31malert\x1b[0m`,
		`two\nlines`,
	}
	testutil.Eventually(t, 10*time.Second, "four lines", func() bool {
		return strings.Count(hp.Stdout.String(), "\n") >= len(want)
	})
	lines := strings.Split(strings.TrimSuffix(hp.Stdout.String(), "\n"), "\n")
	if len(lines) != len(want) {
		t.Fatalf("got %d lines:\n%s", len(lines), hp.Stdout.String())
	}
	for i, l := range lines {
		peer, msg, ok := strings.Cut(l, ": ")
		if !ok || !strings.HasPrefix(peer, "unix://"+host+"#") || msg != want[i] {
			t.Errorf("line %d = %q, want peer unix://%s#N and %q", i, l, host, want[i])
		}
	}
	if strings.ContainsAny(hp.Stdout.String(), "\x1b\x07\r") {
		t.Fatal("a control character reached stdout")
	}
}

func needSocat(t *testing.T) string {
	p, err := exec.LookPath("socat")
	if err != nil {
		t.Skip("socat is not installed (apt-get install socat; .ci/run installs it)")
	}
	return p
}

// startSocat runs socat with args until the test ends.
func startSocat(t *testing.T, args ...string) *exec.Cmd {
	cmd := exec.Command(needSocat(t), args...)
	var stderr testutil.SyncBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("socat stderr:\n%s", stderr.String())
		}
	})
	return cmd
}

// sendOneByOne sends each datagram and waits for it to arrive before the
// next, so that a socat hop (which merges what it reads together) keeps
// them apart.
func sendOneByOne(t *testing.T, c net.Conn, sink *testutil.UDPSink, msgs [][]byte) {
	// socat binds its UDP port when it gets to it: probe until one arrives.
	testutil.Eventually(t, 10*time.Second, "the path to carry a probe", func() bool {
		c.Write([]byte("probe"))
		return len(sink.WaitFor(1, 50*time.Millisecond)) > 0
	})
	base := len(sink.Quiet(200 * time.Millisecond))
	for i, m := range msgs {
		if _, err := c.Write(m); err != nil {
			t.Fatal(err)
		}
		if got := sink.WaitFor(base+i+1, 10*time.Second); len(got) != base+i+1 || !bytes.Equal(got[base+i], m) {
			t.Fatalf("datagram %d: sink has %d, last %q; want %q", i, len(got)-base, got[len(got)-1:], m)
		}
	}
}

func smallDatagrams() [][]byte {
	var ms [][]byte
	for i := range 10 {
		ms = append(ms, []byte(fmt.Sprintf("datagram %d %s", i, strings.Repeat("x", i*50))))
	}
	return ms
}

// TestSocatGuestFeedsOurHost: the guest side of old Kata images (socat)
// talking to katatrace's host relay, which sees a raw peer.
func TestSocatGuestFeedsOurHost(t *testing.T) {
	needSocat(t)
	dir := testutil.SockDir(t)
	host := filepath.Join(dir, "h_6831")
	sink := testutil.NewUDPSink(t)
	hp := start(t, nil, "vsock-to-udp-server", "--from", "unix://"+host, "--to", sink.Addr(), "--raw-split=read")
	hp.WaitLog("listening")
	port := testutil.FreePort(t, "udp")
	startSocat(t, "-u", fmt.Sprintf("UDP-RECV:%d,bind=127.0.0.1", port), "UNIX-CONNECT:"+host)
	sendOneByOne(t, udpSender(t, port), sink, smallDatagrams())
	if !strings.Contains(hp.Stderr.String(), "framing=raw") {
		t.Fatalf("host did not see a raw peer:\n%s", hp.Stderr.String())
	}
}

// TestOurGuestFeedsSocatHost: katatrace's guest relay with --framing=raw
// talking to a host that still runs socat.
func TestOurGuestFeedsSocatHost(t *testing.T) {
	needSocat(t)
	dir := testutil.SockDir(t)
	host := filepath.Join(dir, "h_6831")
	sink := testutil.NewUDPSink(t)
	startSocat(t, "-u", "UNIX-LISTEN:"+host+",fork", "UDP-SENDTO:"+strings.TrimPrefix(sink.Addr(), "udp://"))
	testutil.Eventually(t, 5*time.Second, "socat to listen", func() bool {
		c, err := net.Dial("unix", host)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	port := testutil.FreePort(t, "udp")
	gp := start(t, nil, "jaeger-client-socat-redirector", "--from", fmt.Sprintf("udp://127.0.0.1:%d", port),
		"--to", "unix://"+host, "--framing=raw")
	gp.WaitLog("connected to host")
	sendOneByOne(t, udpSender(t, port), sink, smallDatagrams())
}

// TestJournalRedirectTakesFD3: the journal relay's default, fd://3, is the
// socket a service manager passes (syslog.socket); here the test is that
// service manager.
func TestJournalRedirectTakesFD3(t *testing.T) {
	dir := testutil.SockDir(t)
	host := filepath.Join(dir, "h_5140")
	hp := start(t, nil, "vsock-to-text-server", "--from", "unix://"+host)
	hp.WaitLog("listening")
	syslog := filepath.Join(dir, "syslog")
	sock, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: syslog, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	f, err := sock.File()
	if err != nil {
		t.Fatal(err)
	}
	sock.Close()
	cmd := exec.Command(bin(t, "kata-journald-host-redirect"), "--to", "unix://"+host)
	cmd.Env = testutil.Env("KATATRACE_TEST_AS_MAIN=1")
	cmd.ExtraFiles = []*os.File{f} // fd 3
	var stderr testutil.SyncBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	c, err := net.Dial("unixgram", syslog)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	testutil.Eventually(t, 10*time.Second, "a message through fd 3", func() bool {
		c.Write([]byte("<13>from fd 3"))
		return strings.Contains(hp.Stdout.String(), "<13>from fd 3")
	})
	// The relay logs where it reads once it reads: a message may pass first.
	testutil.Eventually(t, 10*time.Second, "the relay's log naming fd://3", func() bool { return strings.Contains(stderr.String(), "from=fd://3") })

	// Without the socket, the error says what fd://3 expects.
	code, _, errOut := run(t, nil, "kata-journald-host-redirect", "--to", "unix://"+host)
	if code == 0 || !strings.Contains(errOut, "fd 3") || !strings.Contains(errOut, "syslog.socket") || !strings.Contains(errOut, "--from unixgram:///dev/log") {
		t.Fatalf("without fd 3: exit %d\n%s", code, errOut)
	}
}

// TestSIGHUPReloadsAndKeepsServing: SIGHUP means reload, as systemd's
// ExecReload does: a host relay re-scans its pattern (making again a
// VM's socket someone removed) and reopens its sink, a guest relay goes
// on, and both keep relaying; SIGTERM still stops them cleanly.
func TestSIGHUPReloadsAndKeepsServing(t *testing.T) {
	base := filepath.Join(testutil.SockDir(t), "fc")
	sock := filepath.Join(base, "vm1", "root", "kata.hvsock_6831")
	testutil.VMMSocket(t, filepath.Join(base, "vm1", "root", "kata.hvsock"))
	sink := testutil.NewUDPSink(t)
	hp := start(t, nil, "vsock-to-udp-server", "--from", "unix://"+base+"/*/root/kata.hvsock_6831", "--to", sink.Addr())
	hp.WaitLog("msg=ready")
	if !strings.Contains(hp.Stderr.String(), "msg=starting role=vsock-to-udp-server version=test") {
		t.Errorf("no start line with the version:\n%s", hp.Stderr.String())
	}
	// Someone removes the VM's socket: nobody can connect until a reload.
	if err := os.Remove(sock); err != nil {
		t.Fatal(err)
	}
	hp.Signal(syscall.SIGHUP)
	hp.WaitLog("a VM's socket was removed; creating it again")
	hp.WaitLog("SIGHUP: reloaded; still running")
	port := testutil.FreePort(t, "udp")
	gp := start(t, nil, "jaeger-client-socat-redirector", "--from", fmt.Sprintf("udp://127.0.0.1:%d", port), "--to", "unix://"+sock)
	gp.WaitLog("connected to host")
	// The units' ExecReload=: katatrace reload $MAINPID.
	if code, _, errOut := run(t, nil, roles.BinaryName, "reload", strconv.Itoa(gp.Cmd.Process.Pid)); code != 0 {
		t.Fatalf("katatrace reload: exit %d\n%s", code, errOut)
	}
	gp.WaitLog("SIGHUP: nothing to reload here; still running")
	if code, _, errOut := run(t, nil, roles.BinaryName, "reload", "1"); code != 2 || !strings.Contains(errOut, "never signalled") {
		t.Errorf("katatrace reload 1: exit %d\n%s", code, errOut)
	}
	sleeper := exec.Command("sleep", "30")
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sleeper.Process.Kill(); _ = sleeper.Wait() }()
	if code, _, errOut := run(t, nil, roles.BinaryName, "reload", strconv.Itoa(sleeper.Process.Pid)); code != 1 || !strings.Contains(errOut, "not katatrace") {
		t.Errorf("katatrace reload of sleep(1): exit %d\n%s", code, errOut)
	}
	hp.Signal(syscall.SIGHUP)
	c := udpSender(t, port)
	for i := range 20 {
		c.Write([]byte{byte(i)})
	}
	if got := sink.WaitFor(20, 10*time.Second); len(got) != 20 {
		t.Fatalf("after SIGHUPs the sink got %d of 20\nhost:\n%s\nguest:\n%s", len(got), hp.Stderr.String(), gp.Stderr.String())
	}
	gp.Signal(syscall.SIGTERM)
	if code := gp.Wait(10 * time.Second); code != 0 {
		t.Fatalf("guest relay exit %d\n%s", code, gp.Stderr.String())
	}
	hp.Signal(syscall.SIGTERM)
	if code := hp.Wait(10 * time.Second); code != 0 || !strings.Contains(hp.Stderr.String(), "msg=stopped") {
		t.Fatalf("host relay exit %d\n%s", code, hp.Stderr.String())
	}
	if _, err := os.Stat(sock); err == nil {
		t.Error("the socket was left behind")
	}
}

// TestHostFindsVMsByPattern: vsock-to-udp-server with a pattern --from
// starts before any VM exists, and serves a VM's guest relay once the VM's
// directory and its VMM's socket appear.
func TestHostFindsVMsByPattern(t *testing.T) {
	base := filepath.Join(testutil.SockDir(t), "fc") // no VM yet, not even the directory
	sink := testutil.NewUDPSink(t)
	hp := start(t, nil, "vsock-to-udp-server", "--from", "unix://"+base+"/*/root/kata.hvsock_6831", "--to", sink.Addr())
	hp.WaitLog("watching for VMs")
	sock := filepath.Join(base, "vm1", "root", "kata.hvsock_6831")
	testutil.VMMSocket(t, filepath.Join(base, "vm1", "root", "kata.hvsock"))
	hp.WaitLog("VM found; listening")
	port := testutil.FreePort(t, "udp")
	gp := start(t, nil, "jaeger-client-socat-redirector", "--from", fmt.Sprintf("udp://127.0.0.1:%d", port), "--to", "unix://"+sock)
	gp.WaitLog("connected to host")
	c := udpSender(t, port)
	for i := range 50 {
		c.Write([]byte{byte(i)})
	}
	if got := sink.WaitFor(50, 10*time.Second); len(got) != 50 {
		t.Fatalf("sink got %d of 50 through the VM found by pattern", len(got))
	}
	if err := os.RemoveAll(filepath.Join(base, "vm1")); err != nil {
		t.Fatal(err)
	}
	hp.WaitLog("VM gone; its listener closed")
	gp.Signal(syscall.SIGTERM)
	gp.Wait(10 * time.Second)
	hp.Signal(syscall.SIGTERM)
	if code := hp.Wait(10 * time.Second); code != 0 {
		t.Fatalf("host relay exit %d\n%s", code, hp.Stderr.String())
	}
}

// TestHostStopsWithinDrainWhenSinkBlocked: a host relay whose sink is stuck
// (a unixgram syslog socket nobody reads: every send blocks once its queue
// is full) still exits within its drain timeout of SIGTERM, not at the
// sink's mercy.
func TestHostStopsWithinDrainWhenSinkBlocked(t *testing.T) {
	dir := testutil.SockDir(t)
	stuck := filepath.Join(dir, "stuck")
	rc, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: stuck, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close() // never read
	path := filepath.Join(dir, "h_5140")
	p := start(t, nil, "vsock-to-text-server", "--from", "unix://"+path, "--to", "unixgram://"+stuck, "--drain-timeout", "500ms")
	p.WaitLog("listening")
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	msg := wire.AppendHello(nil, wire.KindText)
	for range 2000 {
		msg = wire.AppendFrame(msg, []byte(strings.Repeat("x", 1000)))
	}
	go func() { _, _ = c.Write(msg) }() // the host stops reading once its sink blocks
	// Stuck: the socket's queue holds a few hundred of these at most.
	time.Sleep(300 * time.Millisecond)
	p.Signal(syscall.SIGTERM)
	select {
	case <-p.Done():
	case <-time.After(10 * time.Second):
		t.Fatalf("still running 10 s after SIGTERM with a 500 ms drain timeout\n%s", p.Stderr.String())
	}
	if !strings.Contains(p.Stderr.String(), "drain") {
		t.Errorf("the stop does not say the drain was cut:\n%s", p.Stderr.String())
	}
}

// TestGuestRelayStopsWithinDrainWhileItsClientSends: SIGTERM while the
// guest relay's client keeps sending 1,000 datagrams a second: it reads
// what was waiting, not what keeps coming, the host confirms all of it,
// and it says so and exits 0 within --drain-timeout (and a second).
func TestGuestRelayStopsWithinDrainWhileItsClientSends(t *testing.T) {
	_, port, _, gp := relayPair(t, "--drain-timeout", "1s")
	testutil.SteadyClient(t, "udp", fmt.Sprintf("127.0.0.1:%d", port)) // until the test ends
	time.Sleep(500 * time.Millisecond)
	began := time.Now()
	gp.Signal(syscall.SIGTERM)
	code := gp.Wait(10 * time.Second)
	took := time.Since(began)
	log := gp.Stderr.String()
	if code != 0 || took > 2*time.Second {
		t.Fatalf("guest relay exit %d after %v, want 0 within 2 s\n%s", code, took, log)
	}
	if !strings.Contains(log, "drained: the host confirmed every datagram") || strings.Contains(log, "drain incomplete") {
		t.Fatalf("guest did not log a confirmed drain:\n%s", log)
	}
}
