package systemd

import (
	"context"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

var notifyTests = []struct {
	in   string
	want NotifyAddr
	err  string
}{
	{"", NotifyAddr{}, ""},
	{"/run/systemd/notify", NotifyAddr{Network: "unixgram", Path: "/run/systemd/notify"}, ""},
	{"@abstract", NotifyAddr{Network: "unixgram", Path: "@abstract"}, ""},
	{"vsock:2:8888", NotifyAddr{Network: "vsock", CID: 2, Port: 8888}, ""},
	{"vsock-stream:2:8888", NotifyAddr{Network: "vsock", Type: "stream", CID: 2, Port: 8888}, ""},
	{"vsock-seqpacket:3:1", NotifyAddr{Network: "vsock", Type: "seqpacket", CID: 3, Port: 1}, ""},
	{"vsock-dgram:2:1", NotifyAddr{Network: "vsock", Type: "dgram", CID: 2, Port: 1}, ""},
	{"vsock:2", NotifyAddr{}, "vsock:CID:PORT"},
	{"vsock:x:1", NotifyAddr{}, "vsock:CID:PORT"},
	{"vsock:4294967295:1", NotifyAddr{}, "vsock:CID:PORT"},
	{"vsock-bogus:2:1", NotifyAddr{}, "unknown vsock type"},
	{"relative/path", NotifyAddr{}, "absolute path"},
	{"/" + strings.Repeat("a", 200), NotifyAddr{}, "unix socket path"},
}

func TestParseNotifySocket(t *testing.T) {
	for _, tt := range notifyTests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseNotifySocket(tt.in)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) || !strings.Contains(err.Error(), "NOTIFY_SOCKET") {
					t.Fatalf("error = %v, want one naming NOTIFY_SOCKET and %q", err, tt.err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("got %+v, %v; want %+v", got, err, tt.want)
			}
		})
	}
}

func FuzzParseNotifySocket(f *testing.F) {
	for _, tt := range notifyTests {
		f.Add(tt.in)
	}
	f.Fuzz(func(t *testing.T, s string) {
		a, err := ParseNotifySocket(s)
		if err == nil && s != "" && a.Network != "unixgram" && a.Network != "vsock" {
			t.Fatalf("%q parsed to %+v", s, a)
		}
	})
}

// TestNotify uses a real unixgram socket, as go-systemd's own tests do.
func TestNotify(t *testing.T) {
	dir, err := os.MkdirTemp("", "ktn")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "notify")
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	t.Setenv("NOTIFY_SOCKET", path)
	if ok, err := Notify(context.Background(), Ready); !ok || err != nil {
		t.Fatalf("Notify = %v, %v", ok, err)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 64)
	n, err := c.Read(buf)
	if err != nil || string(buf[:n]) != "READY=1" {
		t.Fatalf("got %q, %v", buf[:n], err)
	}
	t.Setenv("NOTIFY_SOCKET", "")
	if ok, err := Notify(context.Background(), Ready); ok || err != nil {
		t.Fatalf("without NOTIFY_SOCKET: %v, %v", ok, err)
	}
	t.Setenv("NOTIFY_SOCKET", "vsock:nope")
	if _, err := Notify(context.Background(), Ready); err == nil {
		t.Fatal("bad NOTIFY_SOCKET not reported")
	}
}

func TestWatchdogInterval(t *testing.T) {
	t.Setenv("WATCHDOG_USEC", "2000000")
	t.Setenv("WATCHDOG_PID", "")
	if d, err := WatchdogInterval(); err != nil || d != time.Second {
		t.Fatalf("interval = %v, %v; want 1s (half of WATCHDOG_USEC)", d, err)
	}
	t.Setenv("WATCHDOG_USEC", "")
	if d, _ := WatchdogInterval(); d != 0 {
		t.Fatalf("interval without WATCHDOG_USEC = %v", d)
	}
}

// TestWatchdogPingsAndStopsOnce: with a watchdog, pings reach the notify
// socket until stop, and a second stop is harmless.
func TestWatchdogPingsAndStopsOnce(t *testing.T) {
	path := filepath.Join(t.TempDir(), "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	t.Setenv("NOTIFY_SOCKET", path)
	t.Setenv("WATCHDOG_USEC", "20000")
	t.Setenv("WATCHDOG_PID", strconv.Itoa(os.Getpid()))
	stop := StartWatchdog(slog.New(slog.DiscardHandler))
	buf := make([]byte, 64)
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, err := conn.Read(buf)
	if err != nil || string(buf[:n]) != "WATCHDOG=1" {
		t.Fatalf("ping: %q, %v", buf[:n], err)
	}
	stop()
	stop()
}
