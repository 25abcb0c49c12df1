package main

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/net/ipv4"

	"github.com/katatrace/katatrace/endpoint"
	"github.com/katatrace/katatrace/internal/freeport"
)

const headerSize = 24 // magic, step, seq, send time

var magic = [4]byte{'K', 'T', 'B', '1'}

// pattern is the payload every datagram carries, offset by its seq, so any
// truncation, split, merge or mix-up is seen.
var pattern = func() []byte {
	b := make([]byte, 65536+256)
	for i := range b {
		b[i] = byte(i)
	}
	return b
}()

func payloadOf(seq uint64, size int) []byte {
	off := int(seq*7) % 256
	return pattern[off : off+size-headerSize]
}

// workloadSizes gives each workload's datagram size by sequence number.
var workloadSizes = map[string]func(seq uint64) int{
	"64":  func(uint64) int { return 64 },
	"1k":  func(uint64) int { return 1024 },
	"8k":  func(uint64) int { return 8192 },
	"60k": func(uint64) int { return 61440 },
	// Jaeger clients send batches up to 65,000 bytes: many small, some big.
	"jaeger": func(seq uint64) int {
		h := (seq*0x9E3779B97F4A7C15)>>40 ^ seq
		switch r := h % 100; {
		case r < 60:
			return 300 + int(h%1700)
		case r < 85:
			return 2000 + int(h%6000)
		case r < 95:
			return 8000 + int(h%22000)
		default:
			return 30000 + int(h%35000)
		}
	},
}

var benchStart = time.Now()

// path is one of the three ways from sender to sink, running.
type path struct {
	name   string
	input  string // where the sender sends
	sink   *sink
	relays []*exec.Cmd
	labels []string
	dir    string
	step   uint32
}

func startPath(name string, cfg config) (*path, error) {
	s, err := newSink()
	if err != nil {
		return nil, err
	}
	p := &path{name: name, sink: s}
	p.dir, err = os.MkdirTemp("", "ktbench")
	if err != nil {
		return nil, err
	}
	sock := filepath.Join(p.dir, "h.sock")
	in, err := freeUDP()
	if err != nil {
		return nil, err
	}
	switch name {
	case "baseline":
		p.input = s.addr
		return p, p.probe()
	case "socat":
		err = p.start("socat-host", cfg.socat, "-u", "UNIX-LISTEN:"+sock+",fork", "UDP-SENDTO:"+s.addr)
		if err == nil {
			waitFile(sock)
			err = p.startGuest("socat-guest", cfg.socat, "-u", "UDP-RECV:"+portOf(in)+",bind=127.0.0.1", "UNIX-CONNECT:"+sock)
		}
	case "limit":
		self, e := os.Executable()
		if e != nil {
			return nil, e
		}
		err = p.start("limit-host", self, "-limit-host", sock, s.addr)
		if err == nil {
			waitFile(sock)
			err = p.startGuest("limit-guest", self, "-limit-guest", in, sock)
		}
	case "katatrace":
		err = p.start("host", cfg.bin, append([]string{"vsock-to-udp-server", "--from", "unix://" + sock, "--to", "udp://" + s.addr, "--log-level=warn"}, cfg.hostFlags...)...)
		if err == nil {
			waitFile(sock)
			err = p.startGuest("guest", cfg.bin, "jaeger-client-socat-redirector", "--from", "udp://"+in, "--to", "unix://"+sock, "--log-level=warn")
		}
	}
	if err != nil {
		p.stop()
		return nil, err
	}
	p.input = in
	return p, p.probe()
}

// startGuest starts a guest side from its own copy of bin, out of the page
// cache, as a VM starts it from its disk with its own kernel: nothing else
// maps that binary's pages there (sharing the host side's cached pages
// here, fault-around would count more of the file in its RSS than it uses).
func (p *path) startGuest(label, bin string, args ...string) error {
	dir := filepath.Join(p.dir, "guest")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	own := filepath.Join(dir, filepath.Base(bin))
	if err := copyUncached(own, bin); err != nil {
		return err
	}
	return p.start(label, own, args...)
}

func (p *path) start(label, bin string, args ...string) error {
	cmd := exec.Command(bin, args...)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return err
	}
	p.relays = append(p.relays, cmd)
	p.labels = append(p.labels, label)
	return nil
}

func (p *path) stop() {
	// Guest first: it drains into the host, which is still there.
	for _, c := range slices.Backward(p.relays) {
		_ = c.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = c.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = c.Process.Kill()
			<-done
		}
	}
	p.sink.close()
	_ = os.RemoveAll(p.dir)
}

func waitFile(path string) {
	for i := 0; i < 500; i++ {
		if _, err := os.Stat(path); err == nil {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// probe sends marker datagrams until one comes through: every process of
// the path has bound its sockets.
func (p *path) probe() error {
	c, err := net.Dial("udp", p.input)
	if err != nil {
		return err
	}
	defer c.Close()
	b := make([]byte, headerSize)
	copy(b, magic[:])
	binary.BigEndian.PutUint32(b[4:], 0xffffffff)
	for i := 0; i < 500; i++ {
		_, _ = c.Write(b)
		if p.sink.probes() > 0 {
			time.Sleep(200 * time.Millisecond)
			return nil
		}
		time.Sleep(10 * time.Millisecond)
	}
	return fmt.Errorf("nothing came through the %s path in 5s", p.name)
}

// freeUDP is a free loopback UDP address, outside the ephemeral range.
func freeUDP() (string, error) {
	p, err := freeport.Pick("udp")
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(p)), err
}

func portOf(hostport string) string {
	_, port, _ := net.SplitHostPort(hostport)
	return port
}

// run sends one workload at one offered load for d, waits for the path to
// drain, and measures. A plain sender writes one datagram per call, as
// jaeger-client-go does; a batched one 64 per sendmmsg.
func (p *path) run(workload, sender string, rate int, d time.Duration) Result {
	p.step++
	size := workloadSizes[workload]
	cpu0 := p.cpu()
	p.sink.begin(p.step, size)
	sent, took := send(p.input, p.step, size, rate, d, sender == "plain")
	p.sink.quiet(300*time.Millisecond, 5*time.Second)
	st := p.sink.end()
	cpu := p.cpu() - cpu0
	r := Result{Path: p.name, Sender: sender, Workload: workload, Offered: rate, Sent: sent, SentRate: float64(sent) / took.Seconds(),
		Intact: st.intact, Lost: sent - st.intact, Corrupted: st.corrupt, RelayLabels: p.labels}
	r.Rate = float64(st.intact) / took.Seconds()
	r.MBps = float64(st.bytes) / took.Seconds() / 1e6
	if st.intact > 0 && len(p.relays) > 0 {
		r.CPUPer100k = cpu.Seconds() / float64(st.intact) * 100000
	}
	if len(st.lat) > 0 {
		slices.Sort(st.lat)
		r.P50us = float64(st.lat[len(st.lat)/2]) / 1e3
		r.P99us = float64(st.lat[len(st.lat)*99/100]) / 1e3
	}
	for _, c := range p.relays {
		r.PeakRSSKiB = append(r.PeakRSSKiB, peakRSS(c.Process.Pid))
	}
	return r
}

// send offers rate datagrams/s (0: as fast as it can) for d, in batches
// of sendmmsg, or with one write each (plain).
func send(to string, step uint32, size func(uint64) int, rate int, d time.Duration, plain bool) (int, time.Duration) {
	c, err := net.Dial("udp", to)
	if err != nil {
		fatalf("sender: %v", err)
	}
	defer c.Close()
	_ = c.(*net.UDPConn).SetWriteBuffer(8 << 20)
	pc := ipv4.NewPacketConn(c.(*net.UDPConn))
	const batch = 64
	bufs := make([][]byte, batch)
	for i := range bufs {
		bufs[i] = make([]byte, 65536)
	}
	msgs := make([]ipv4.Message, batch)
	var seq uint64
	start := time.Now()
	for {
		elapsed := time.Since(start)
		if elapsed >= d {
			break
		}
		n := batch
		if rate > 0 {
			due := int(float64(rate)*elapsed.Seconds()) - int(seq)
			if due <= 0 {
				time.Sleep(200 * time.Microsecond)
				continue
			}
			n = min(n, due)
		}
		for i := range n {
			s := seq + uint64(i)
			sz := size(s)
			b := bufs[i][:sz]
			copy(b, magic[:])
			binary.BigEndian.PutUint32(b[4:], step)
			binary.BigEndian.PutUint64(b[8:], s)
			binary.BigEndian.PutUint64(b[16:], uint64(time.Since(benchStart)))
			copy(b[headerSize:], payloadOf(s, sz))
			msgs[i].Buffers = [][]byte{b}
		}
		for off := 0; off < n; {
			if plain {
				if _, err := c.Write(msgs[off].Buffers[0]); err != nil {
					time.Sleep(50 * time.Microsecond)
					continue
				}
				off++
				continue
			}
			k, err := pc.WriteBatch(msgs[off:n], 0)
			if err != nil {
				// A full socket buffer: the offered load is more than the
				// kernel takes; what was not sent is not counted as sent.
				if k <= 0 {
					time.Sleep(50 * time.Microsecond)
					continue
				}
			}
			off += k
		}
		seq += uint64(n)
	}
	return int(seq), time.Since(start)
}

// cpu is the CPU time used so far by the path's relay processes and their
// descendants, living or reaped.
func (p *path) cpu() time.Duration {
	var ticks int64
	for _, c := range p.relays {
		ticks += treeTicks(c.Process.Pid)
	}
	return time.Duration(ticks) * time.Second / 100 // USER_HZ
}

func treeTicks(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// Fields after the command name (which may hold spaces) start at ") ".
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+2:]))
	var t int64
	for _, i := range []int{11, 12, 13, 14} { // utime stime cutime cstime
		v, _ := strconv.ParseInt(f[i], 10, 64)
		t += v
	}
	for _, child := range children(pid) {
		t += treeTicks(child)
	}
	return t
}

func children(pid int) []int {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
	var out []int
	for _, f := range strings.Fields(string(b)) {
		n, _ := strconv.Atoi(f)
		out = append(out, n)
	}
	return out
}

// peakRSS is the largest VmHWM in the process tree, in KiB.
func peakRSS(pid int) int {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	peak := 0
	for _, l := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(l, "VmHWM:"); ok {
			peak, _ = strconv.Atoi(strings.Fields(rest)[0])
		}
	}
	for _, c := range children(pid) {
		peak = max(peak, peakRSS(c))
	}
	return peak
}

// sink receives and checks every datagram of a step.
type sink struct {
	conn *net.UDPConn
	addr string
	mu   sync.Mutex
	cur  stepStats
	last time.Time
	prob int
	done chan struct{}
}

type stepStats struct {
	step    uint32
	size    func(uint64) int
	seen    []bool
	intact  int
	corrupt int
	bytes   int
	lat     []int64
}

func newSink() (*sink, error) {
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return nil, err
	}
	endpoint.SetReadBuffer(c, 64<<20) // so that the sink is never what loses datagrams
	s := &sink{conn: c, addr: c.LocalAddr().String(), done: make(chan struct{})}
	go s.read()
	return s, nil
}

func (s *sink) read() {
	defer close(s.done)
	pc := ipv4.NewPacketConn(s.conn)
	msgs := make([]ipv4.Message, 64)
	for i := range msgs {
		msgs[i].Buffers = [][]byte{make([]byte, 65536)}
	}
	for {
		n, err := pc.ReadBatch(msgs, 0)
		if err != nil {
			return
		}
		now := int64(time.Since(benchStart))
		s.mu.Lock()
		s.last = time.Now()
		for _, m := range msgs[:n] {
			s.check(m.Buffers[0][:m.N], now)
		}
		s.mu.Unlock()
	}
}

func (s *sink) check(b []byte, now int64) {
	st := &s.cur
	if len(b) >= headerSize && [4]byte(b[:4]) == magic && binary.BigEndian.Uint32(b[4:]) == 0xffffffff {
		s.prob++
		return
	}
	if st.size == nil {
		return
	}
	if len(b) < headerSize || [4]byte(b[:4]) != magic {
		st.corrupt++
		return
	}
	if binary.BigEndian.Uint32(b[4:]) != st.step {
		return // a straggler of an earlier step
	}
	seq := binary.BigEndian.Uint64(b[8:])
	if seq > 1<<26 || len(b) != st.size(seq) || !bytes.Equal(b[headerSize:], payloadOf(seq, len(b))) {
		st.corrupt++
		return
	}
	for uint64(len(st.seen)) <= seq {
		st.seen = append(st.seen, make([]bool, len(st.seen)+1024)...)
	}
	if st.seen[seq] {
		st.corrupt++ // a duplicate is not a delivery
		return
	}
	st.seen[seq] = true
	st.intact++
	st.bytes += len(b)
	st.lat = append(st.lat, now-int64(binary.BigEndian.Uint64(b[16:])))
}

func (s *sink) probes() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.prob
}

func (s *sink) begin(step uint32, size func(uint64) int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cur = stepStats{step: step, size: size}
}

// quiet waits until nothing arrived for idle (at most max).
func (s *sink) quiet(idle, max time.Duration) {
	deadline := time.Now().Add(max)
	for time.Now().Before(deadline) {
		time.Sleep(idle / 4)
		s.mu.Lock()
		last := s.last
		s.mu.Unlock()
		if time.Since(last) >= idle {
			return
		}
	}
}

func (s *sink) end() stepStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.cur
	s.cur = stepStats{}
	return st
}

func (s *sink) close() {
	_ = s.conn.Close()
	<-s.done
}
