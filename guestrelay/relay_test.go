package guestrelay

import (
	"context"
	"log/slog"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/katatrace/katatrace/internal/testutil"
	"github.com/katatrace/katatrace/wire"
)

// TestHostThatHangsUpIsRetriedWithBackoff: a host that closes every
// connection at once, saying nothing (a port of another kind), is retried
// as an unreachable one is, with backoff, and said once: the relay does
// not spin reconnecting.
func TestHostThatHangsUpIsRetriedWithBackoff(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var accepted atomic.Int64
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			c.Close()
		}
	}()
	var logs testutil.SyncBuffer
	r := StartRelay(Config{
		Kind: wire.KindText,
		Dial: func(ctx context.Context) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "tcp", ln.Addr().String())
		},
		Target:     "tcp://" + ln.Addr().String(),
		QueueBytes: 1 << 20,
		BackoffMin: 20 * time.Millisecond,
		BackoffMax: 200 * time.Millisecond,
		Logger:     slog.New(slog.NewTextHandler(&logs, nil)),
	}, nil, 0)
	time.Sleep(time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_ = r.Shutdown(ctx)
	// Without backoff, thousands; with it, about 1 s / (20..200 ms).
	if n := accepted.Load(); n < 2 || n > 40 {
		t.Fatalf("%d connections in 1 s to a host that hangs up at once", n)
	}
	if n := strings.Count(logs.String(), "the host closed the connection at once; retrying"); n != 1 {
		t.Fatalf("said %d times, want once at warning level:\n%s", n, logs.String())
	}
}
