package systemd

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
)

// States sent with Notify.
const (
	Ready    = daemon.SdNotifyReady
	Stopping = daemon.SdNotifyStopping
	Watchdog = daemon.SdNotifyWatchdog
)

// NotifyAddr is a parsed NOTIFY_SOCKET.
type NotifyAddr struct {
	// Network is "unixgram" or "vsock" (empty: no service manager listens).
	Network string
	Path    string // unixgram: a path, or @name for an abstract socket
	// Type is the vsock socket type systemd names: "stream", "seqpacket"
	// or "dgram" ("" means systemd's default, seqpacket falling back to
	// stream).
	Type      string
	CID, Port uint32
}

// ParseNotifySocket parses a NOTIFY_SOCKET value: a unix socket path,
// @abstract, or vsock:CID:PORT (also vsock-stream:, vsock-seqpacket:,
// vsock-dgram:), as systemd 254 and later hand to a VM's guest.
func ParseNotifySocket(s string) (NotifyAddr, error) {
	switch {
	case s == "":
		return NotifyAddr{}, nil
	case strings.HasPrefix(s, "/") || strings.HasPrefix(s, "@"):
		if len(s) > 107 || strings.IndexByte(s, 0) >= 0 {
			return NotifyAddr{}, fmt.Errorf("NOTIFY_SOCKET=%q: not a usable unix socket path", s)
		}
		return NotifyAddr{Network: "unixgram", Path: s}, nil
	case strings.HasPrefix(s, "vsock"):
		scheme, rest, _ := strings.Cut(s, ":")
		typ := strings.TrimPrefix(strings.TrimPrefix(scheme, "vsock"), "-")
		switch typ {
		case "", "stream", "seqpacket", "dgram":
		default:
			return NotifyAddr{}, fmt.Errorf("NOTIFY_SOCKET=%q: unknown vsock type %q (want vsock:, vsock-stream:, vsock-seqpacket: or vsock-dgram:)", s, typ)
		}
		cid, port, ok := strings.Cut(rest, ":")
		c, cerr := strconv.ParseUint(cid, 10, 32)
		p, perr := strconv.ParseUint(port, 10, 32)
		if !ok || cerr != nil || perr != nil || c == math.MaxUint32 || p == math.MaxUint32 {
			return NotifyAddr{}, fmt.Errorf("NOTIFY_SOCKET=%q: want vsock:CID:PORT, e.g. vsock:2:8888", s)
		}
		return NotifyAddr{Network: "vsock", Type: typ, CID: uint32(c), Port: uint32(p)}, nil
	}
	return NotifyAddr{}, fmt.Errorf("NOTIFY_SOCKET=%q: want an absolute path, @abstract or vsock:CID:PORT", s)
}

// Status is the state that shows s in systemctl status (one line).
func Status(s string) string { return "STATUS=" + strings.ReplaceAll(s, "\n", " ") }

// Notify sends state to the service manager named by NOTIFY_SOCKET. It
// reports false, without error, when there is none.
func Notify(ctx context.Context, state string) (bool, error) {
	a, err := ParseNotifySocket(os.Getenv("NOTIFY_SOCKET"))
	if err != nil {
		return false, err
	}
	switch a.Network {
	case "":
		return false, nil
	case "unixgram":
		return daemon.SdNotify(false, state)
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := notifyVsock(ctx, a, state); err != nil {
		return false, fmt.Errorf("sd_notify to vsock:%d:%d: %w", a.CID, a.Port, err)
	}
	return true, nil
}

// WatchdogInterval is how often to send Watchdog: half of WATCHDOG_USEC when
// it is set for this process, zero otherwise.
func WatchdogInterval() (time.Duration, error) {
	d, err := daemon.SdWatchdogEnabled(false)
	return d / 2, err
}

// StartWatchdog pings systemd's watchdog (WATCHDOG=1 every half
// WATCHDOG_USEC) until stop is called, when this service has one.
func StartWatchdog(log *slog.Logger) (stop func()) {
	every, err := WatchdogInterval()
	if err != nil || every <= 0 {
		return func() {}
	}
	done := make(chan struct{})
	go func() {
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				if _, err := Notify(context.Background(), Watchdog); err != nil {
					log.Warn("watchdog ping failed", "err", err)
				}
			case <-done:
				return
			}
		}
	}()
	return sync.OnceFunc(func() { close(done) })
}
