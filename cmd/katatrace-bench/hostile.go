package main

import (
	"encoding/binary"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/katatrace/katatrace/internal/otlptest"
)

// Hostile guests: each opens conns connections to the forwarder, each
// announcing a span of hostileSpan bytes, sending hostileSent of it, and
// stalling.
const (
	hostileSpan = 4 << 20
	hostileSent = 3 << 20
)

// runHostile measures kata-trace-forwarder's memory while guests (each a
// process of its own, as VMs are on one hybrid-vsock socket) hold
// connections inside large spans, and whether a well-behaved agent's spans
// beside them all arrive: for bin, and for baseline (an earlier build)
// when given, in the same run.
func runHostile(bin, baseline string, guests, conns, spans int) error {
	type result struct {
		name             string
		settled, peakKiB int
		arrived          int
		took             time.Duration
	}
	var results []result
	for _, b := range []string{bin, baseline} {
		if b == "" {
			continue
		}
		r := result{name: b}
		var err error
		r.settled, r.peakKiB, r.arrived, r.took, err = hostileRun(b, guests, conns, spans)
		if err != nil {
			return fmt.Errorf("%s: %w", b, err)
		}
		results = append(results, r)
	}
	fmt.Printf("\nkata-trace-forwarder, %d guests × %d connections each announcing %d MiB and stalling after %d MiB, and an agent sending %d spans:\n",
		guests, conns, hostileSpan>>20, hostileSent>>20, spans)
	for _, r := range results {
		fmt.Printf("  %s: RSS %.1f MiB with the guests held, peak %.1f MiB; the agent's spans arrived: %d of %d in %v\n",
			r.name, float64(r.settled)/1024, float64(r.peakKiB)/1024, r.arrived, spans, r.took.Round(time.Millisecond))
	}
	if len(results) == 2 {
		fmt.Printf("  peak RSS: %.3f× the baseline's\n", float64(results[0].peakKiB)/float64(results[1].peakKiB))
	}
	return nil
}

func hostileRun(bin string, guests, conns, spans int) (settled, peak, arrived int, took time.Duration, err error) {
	dir, err := os.MkdirTemp("", "kthostile")
	if err != nil {
		return
	}
	defer os.RemoveAll(dir)
	otlp, stop := otlptest.Start()
	defer stop()
	otlp.Up.Store(true)
	sock := filepath.Join(dir, "vm.sock_10240")
	fw := exec.Command(bin, "kata-trace-forwarder", "--from", "unix://"+sock, "--to", "otlphttp://"+otlp.URL[len("http://"):], "--log-level=error")
	fw.Stderr = os.Stderr
	if err = fw.Start(); err != nil {
		return
	}
	defer func() { _ = fw.Process.Kill(); _ = fw.Wait() }()
	waitFile(sock)
	var kids []*exec.Cmd
	defer func() {
		for _, k := range kids {
			_ = k.Process.Kill() // reaped by its Wait below
		}
	}()
	for range guests {
		k := exec.Command(os.Args[0], "--hostile-guest", sock, strconv.Itoa(conns))
		k.Stderr = os.Stderr
		if err = k.Start(); err != nil {
			return
		}
		kids = append(kids, k)
	}
	exited := make(chan error, len(kids))
	for _, k := range kids {
		go func() { exited <- k.Wait() }()
	}
	select { // the guests connected, their frames begun
	case err = <-exited:
		return 0, 0, 0, 0, fmt.Errorf("a hostile guest ended before the measurement: %v", err)
	case <-time.After(8 * time.Second):
	}
	settled = vmRSS(fw.Process.Pid)
	c, err := net.Dial("unix", sock)
	if err != nil {
		return
	}
	defer c.Close()
	start := time.Now()
	if _, err = c.Write(kata3Stream(spans)); err != nil {
		return
	}
	for time.Since(start) < time.Minute {
		if arrived, _ = otlp.Spans(); arrived >= spans {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	took = time.Since(start)
	peak = peakRSS(fw.Process.Pid)
	return settled, peak, arrived, took, nil
}

// hostileGuest is one hostile guest (run as a process of its own): conns
// connections to sock, each inside a large span that never ends; it stays
// until killed.
func hostileGuest(sock string, conns int) error {
	header := binary.BigEndian.AppendUint64(nil, hostileSpan)
	body := make([]byte, hostileSent)
	var wg sync.WaitGroup
	for range conns {
		c, err := net.Dial("unix", sock)
		if err != nil {
			return err
		}
		wg.Go(func() {
			_ = c.SetWriteDeadline(time.Now().Add(30 * time.Second))
			if _, err := c.Write(header); err == nil {
				_, _ = c.Write(body) // as far as the host reads it
			}
		})
	}
	wg.Wait()
	time.Sleep(1 << 62) // held until killed
	return nil
}
