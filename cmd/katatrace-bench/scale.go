package main

import (
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/katatrace/katatrace/wire"
)

// runScale: the host relay with 1,000 guests connected at once (unix
// sockets, as Firecracker gives one per VM... here all on one listener),
// each sending 100 datagrams/s; nothing may be lost.
func runScale(bin string, hostFlags []string) error {
	const conns, perSec, secs, size = 1000, 100, 10, 200
	s, err := newSink()
	if err != nil {
		return err
	}
	defer s.close()
	p := &path{name: "scale", sink: s}
	p.dir, _ = os.MkdirTemp("", "ktscale")
	defer os.RemoveAll(p.dir)
	sock := filepath.Join(p.dir, "h.sock")
	// The 1,000 guest connections all come from this process: one guest
	// to the host's limits, so they are lifted.
	if err := p.start("host", bin, append([]string{"vsock-to-udp-server", "--from", "unix://" + sock, "--to", "udp://" + s.addr, "--log-level=warn",
		"--max-connections-per-guest", "100000"}, hostFlags...)...); err != nil {
		return err
	}
	defer p.stop()
	waitFile(sock)
	s.begin(1, func(uint64) int { return size })
	cpu0 := p.cpu()
	var seq atomic.Uint64
	var wg sync.WaitGroup
	var failed atomic.Int64
	start := time.Now()
	for i := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := guest(sock, i, perSec, secs, size, &seq); err != nil {
				failed.Add(1)
				fmt.Fprintf(os.Stderr, "guest %d: %v\n", i, err)
			}
		}()
	}
	wg.Wait()
	took := time.Since(start)
	s.quiet(300*time.Millisecond, 10*time.Second)
	st := s.end()
	cpu := p.cpu() - cpu0
	want := int(seq.Load())
	fmt.Printf("host relay, %d guest connections × %d datagrams/s × %ds (%d B each):\n", conns, perSec, secs, size)
	fmt.Printf("  sent %d, delivered intact %d, lost %d, corrupted %d, connections failed %d\n", want, st.intact, want-st.intact, st.corrupt, failed.Load())
	fmt.Printf("  host relay CPU %.2fs over %.1fs (%.0f%% of one core), peak RSS %d KiB\n",
		cpu.Seconds(), took.Seconds(), 100*cpu.Seconds()/took.Seconds(), peakRSS(p.relays[0].Process.Pid))
	if want != st.intact {
		return fmt.Errorf("%d datagrams lost", want-st.intact)
	}
	return nil
}

// guest is one VM's relay: framed, paced, ending with a confirmed flush.
func guest(sock string, id, perSec, secs, size int, seq *atomic.Uint64) error {
	c, err := net.Dial("unix", sock)
	if err != nil {
		return err
	}
	defer c.Close()
	if _, err := c.Write(wire.AppendHello(nil, wire.KindJaeger)); err != nil {
		return err
	}
	b := make([]byte, size)
	frame := make([]byte, 0, wire.FrameHeaderSize+size)
	tick := time.NewTicker(time.Second / time.Duration(perSec))
	defer tick.Stop()
	// Spread the connections' ticks over one period.
	time.Sleep(time.Duration(id) * time.Second / time.Duration(perSec) / 1000)
	for range perSec * secs {
		<-tick.C
		s := seq.Add(1) - 1
		copy(b, magic[:])
		binary.BigEndian.PutUint32(b[4:], 1)
		binary.BigEndian.PutUint64(b[8:], s)
		binary.BigEndian.PutUint64(b[16:], uint64(time.Since(benchStart)))
		copy(b[headerSize:], payloadOf(s, size))
		if _, err := c.Write(wire.AppendFrame(frame[:0], b)); err != nil {
			return err
		}
	}
	if _, err := c.Write(wire.AppendFrame(nil, nil)); err != nil {
		return err
	}
	var ans [4]byte
	_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
	_, err = io.ReadFull(c, ans[:])
	return err
}
