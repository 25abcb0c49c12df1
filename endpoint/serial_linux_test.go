package endpoint

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"testing"
	"time"

	"github.com/katatrace/katatrace/wire"
	"golang.org/x/sys/unix"
)

// openPTY returns a pty's master and its slave's path: the guest end of a
// serial:// channel, as a UART's tty would be.
func openPTY(t *testing.T) (*os.File, string) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pseudo-terminals here (/dev/ptmx: %v)", err)
	}
	t.Cleanup(func() { m.Close() })
	if err := unix.IoctlSetPointerInt(int(m.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatalf("unlockpt: %v", err)
	}
	n, err := unix.IoctlGetInt(int(m.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatalf("ptsname: %v", err)
	}
	return m, fmt.Sprintf("/dev/pts/%d", n)
}

// TestSerialIsEightBitClean: every byte value crosses a tty opened as
// serial:// unchanged, both ways. A tty as it comes turns LF into CR LF on
// output and CR into LF on input, and stops or signals on ^S and ^C: frames
// would arrive mangled.
func TestSerialIsEightBitClean(t *testing.T) {
	master, slave := openPTY(t)
	conn, err := Dial(context.Background(), mustParseAddr("serial://"+slave))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	all := make([]byte, 256)
	for i := range all {
		all[i] = byte(i)
	}
	frame := wire.AppendFrame(wire.AppendHello(nil, wire.KindJaeger), bytes.Repeat(all, 8))

	// Guest to host: what the relay writes arrives as written; host to
	// guest (flush answers): the same.
	crosses(t, "out", conn, master, frame)
	crosses(t, "in", master, conn, all)
}

// crosses writes p to w and checks that r reads it back unchanged.
func crosses(t *testing.T, way string, w io.Writer, r interface {
	io.Reader
	SetReadDeadline(time.Time) error
}, p []byte) {
	t.Helper()
	go func() { _, _ = w.Write(p) }()
	got := make([]byte, len(p))
	_ = r.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(r, got); err != nil {
		t.Fatalf("%s: read %d bytes: %v", way, len(p), err)
	}
	if !bytes.Equal(got, p) {
		t.Fatalf("%s: the tty changed the bytes: first difference at %d", way, firstDiff(got, p))
	}
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}
