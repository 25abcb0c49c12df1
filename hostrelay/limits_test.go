package hostrelay

import (
	"io"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/katatrace/katatrace/endpoint"
	"github.com/katatrace/katatrace/internal/testutil"
	"github.com/katatrace/katatrace/wire"
)

func limitedHost(t *testing.T, cfg ServerConfig) (string, *Server) {
	t.Helper()
	path := filepath.Join(testutil.SockDir(t), "h_6831")
	ln, err := endpoint.Listen(testutil.Must(endpoint.ParseAddr("unix://" + path)))
	if err != nil {
		t.Fatal(err)
	}
	cfg.Kind, cfg.Sink, cfg.Logger = wire.KindJaeger, &memSink{}, testLogger(t)
	srv := NewServer(cfg)
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln, "unix://"+path) }()
	t.Cleanup(func() {
		_ = srv.Shutdown(t.Context())
		<-done
	})
	return path, srv
}

// closedByHost waits until the host hangs up on c.
func closedByHost(t *testing.T, c net.Conn, what string) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.Copy(io.Discard, c); err != nil {
		t.Fatalf("%s: the host did not close the connection: %v", what, err)
	}
}

func dialHost(t *testing.T, path string, b []byte) net.Conn {
	t.Helper()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if len(b) > 0 {
		if _, err := c.Write(b); err != nil {
			t.Fatal(err)
		}
	}
	return c
}

func TestHelloAndFrameTimeouts(t *testing.T) {
	path, srv := limitedHost(t, ServerConfig{HelloTimeout: 200 * time.Millisecond, FrameTimeout: 200 * time.Millisecond})
	silent := dialHost(t, path, nil)
	loris := dialHost(t, path, append(wire.AppendHelloV2(nil, wire.KindJaeger, 1, 1), 0, 0)) // half a frame header
	idle := dialHost(t, path, wire.AppendHelloV2(nil, wire.KindJaeger, 2, 1))                // between frames: fine
	closedByHost(t, silent, "no hello")
	closedByHost(t, loris, "unfinished frame")
	if n := srv.Stats().TimedOut; n != 2 {
		t.Fatalf("timed out %d, want the silent and the slow one", n)
	}
	if acked := v2Peer(t, path, 3, 1, []byte("x")); acked != 2 {
		t.Fatalf("a good guest got confirmed up to %d, want 2", acked)
	}
	// The guest quiet between frames is still connected and served.
	if _, err := idle.Write(wire.AppendFrame(nil, []byte("late"))); err != nil {
		t.Fatalf("the idle guest was cut: %v", err)
	}
}

func TestConnectionLimitPerGuest(t *testing.T) {
	// Unix peers are one guest (one VM per hybrid-vsock socket).
	path, srv := limitedHost(t, ServerConfig{MaxConnsPerGuest: 3})
	for range 2 {
		dialHost(t, path, wire.AppendHelloV2(nil, wire.KindJaeger, 9, 1))
	}
	testutil.Eventually(t, 10*time.Second, "2 connections held", func() bool { return srv.Stats().Active == 2 })
	if acked := v2Peer(t, path, 4, 1, []byte("x")); acked != 2 {
		t.Fatalf("the third connection was not served: confirmed %d", acked)
	}
	testutil.Eventually(t, 10*time.Second, "the third gone", func() bool { return srv.Stats().Active == 2 })
	held := dialHost(t, path, wire.AppendHelloV2(nil, wire.KindJaeger, 5, 1))
	testutil.Eventually(t, 10*time.Second, "3 connections held", func() bool { return srv.Stats().Active == 3 })
	over := dialHost(t, path, nil)
	closedByHost(t, over, "a fourth connection")
	if n := srv.Stats().Refused; n != 1 {
		t.Fatalf("refused %d, want 1", n)
	}
	held.Close()
	testutil.Eventually(t, 10*time.Second, "a place free again", func() bool { return srv.Stats().Active == 2 })
	if acked := v2Peer(t, path, 6, 1, []byte("y")); acked != 2 {
		t.Fatalf("after one left, a new connection was not served: confirmed %d", acked)
	}
}
