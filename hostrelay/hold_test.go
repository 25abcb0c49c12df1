package hostrelay

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"io"
	"net"
	"testing"
	"time"

	"github.com/katatrace/katatrace/guestid"
	"github.com/katatrace/katatrace/hold"
	"github.com/katatrace/katatrace/internal/katatest"
	"github.com/katatrace/katatrace/internal/testutil"
	"github.com/katatrace/katatrace/kataspan"
	"github.com/katatrace/katatrace/wire"
)

// stall connects to addr, says hello (when given one), announces a frame
// of n bytes with a header of hsize bytes, sends part of it, and keeps the
// connection open, sending nothing more, until the test ends.
func stall(t *testing.T, addr string, hello []byte, header []byte, part int) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	b := append(append(bytes.Clone(hello), header...), make([]byte, part)...)
	go func() {
		_ = c.SetWriteDeadline(time.Now().Add(10 * time.Second))
		_, _ = c.Write(b) // a guest whose frame waits for room is not read from
	}()
	return c
}

// TestHostileAgentsCannotTakeTheHostsMemory: forty Kata agents (each its own
// guest, as TCP connections are) announce spans of 1 MiB, send most of
// them and stall. The room they are given stays within the total and each
// guest's share (the rest wait unread), and a good agent's spans beside
// them all arrive.
func TestHostileAgentsCannotTakeTheHostsMemory(t *testing.T) {
	const total, each, span = 4 << 20, 2 << 20, 1 << 20
	sink := &memSink{}
	addr, srv := tcpHost(t, ServerConfig{Sink: sink, HeldBytes: total, HeldBytesPerGuest: each, FrameTimeout: time.Hour,
		Messages: func(r io.Reader, mem Memory) MessageReader {
			sr := kataspan.NewReader(r, span)
			sr.SetMemory(mem)
			return spans{sr}
		}})
	header := binary.BigEndian.AppendUint64(nil, span)
	for range 40 {
		stall(t, addr, nil, header, 3*span/4)
	}
	testutil.Eventually(t, 10*time.Second, "the room to be taken, and frames to wait for it", func() bool {
		st := srv.room.Stats()
		return st.Held > int64(total-hold.Size(span+8)) && st.Waiting > 0
	})
	frames := katatest.Frames(t, "bincode-otel014-api")
	good, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer good.Close()
	if _, err := good.Write(katatest.Capture(t, "bincode-otel014-api")); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, "the good agent's spans", func() bool { return sink.total() == len(frames) })
	st := srv.room.Stats()
	if st.Peak > total || st.Waits < 30 {
		t.Fatalf("room: %+v (the total is %d)", st, total)
	}
	t.Logf("room held %d of %d bytes (peak %d), %d frames waiting; the good agent's %d spans arrived", st.Held, total, st.Peak, st.Waiting, len(frames))
	if srv.Stats().Active != 41 {
		t.Fatalf("%d connections open: an agent's connection is never closed for waiting", srv.Stats().Active)
	}
}

// TestFramesWaitingForRoomAreReadInTurn: guest relays that stall inside
// 60 KB frames hold all the room there is; a good guest's 60 KB frames
// wait for it, unread, and are read in turn as the stalled frames time
// out (their connections closed): every one arrives whole.
func TestFramesWaitingForRoomAreReadInTurn(t *testing.T) {
	sink := &memSink{}
	addr, srv := tcpHost(t, ServerConfig{Sink: sink, HeldBytes: 4 * hold.Chunk, HeldBytesPerGuest: hold.Chunk, FrameTimeout: 300 * time.Millisecond})
	hello := wire.AppendHello(nil, wire.KindJaeger)
	for range 8 {
		stall(t, addr, hello, binary.BigEndian.AppendUint32(nil, 60000), 30000)
	}
	testutil.Eventually(t, 10*time.Second, "the room to be taken, the other four waiting", func() bool {
		st := srv.room.Stats()
		return st.Held == 4*hold.Chunk && st.Waiting == 4
	})
	good, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer good.Close()
	b := bytes.Clone(hello)
	for i := range 20 {
		b = wire.AppendFrame(b, bytes.Repeat([]byte{byte(i)}, 60000))
	}
	if _, err := good.Write(b); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 20*time.Second, "the good guest's frames", func() bool { return sink.total() == 20 })
	// The stalled frames time out in turn, each from when its room came.
	testutil.Eventually(t, 10*time.Second, "every stalled frame timed out", func() bool { return srv.Stats().TimedOut == 8 })
	if st := srv.room.Stats(); st.Peak > 4*hold.Chunk || st.Waits < 5 {
		t.Fatalf("room %+v", st)
	}
	for conn, ps := range sink.got {
		for i, p := range ps {
			if len(p) != 60000 || p[0] != byte(i) || p[59999] != byte(i) {
				t.Fatalf("%s: frame %d not whole", conn, i)
			}
		}
	}
}

// TestRawMessageNotFinishedTimesOut: a socat guest's message begun and
// not finished within the frame timeout closes its connection (the bytes
// held are let go), as a frame does; one whole message before it arrives.
func TestRawMessageNotFinishedTimesOut(t *testing.T) {
	sink := &memSink{}
	addr, srv := tcpHost(t, ServerConfig{Sink: sink, FrameTimeout: 200 * time.Millisecond, RawSplit: lineSplit})
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("whole\nhalf a mess")); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 5*time.Second, "the half message to time out", func() bool { return srv.Stats().TimedOut == 1 })
	if sink.total() != 1 || srv.Stats().Unparsed != 11 {
		t.Fatalf("%d messages, %d bytes unparsed", sink.total(), srv.Stats().Unparsed)
	}
}

// lineSplit cuts a raw stream into lines.
func lineSplit(guestid.ID, func(int)) bufio.SplitFunc { return bufio.ScanLines }

// TestFrameBegunAfterAPauseTimesOut: a frame (or a raw message) whose
// first bytes come after a quiet spell, while the host waits for a whole
// one, still has --frame-timeout to finish: its connection is closed and
// its room given back.
func TestFrameBegunAfterAPauseTimesOut(t *testing.T) {
	for _, tc := range []struct {
		name         string
		cfg          ServerConfig
		first, later []byte
	}{
		{"framed", ServerConfig{}, wire.AppendHello(nil, wire.KindJaeger),
			append(binary.BigEndian.AppendUint32(nil, 60000), make([]byte, 30000)...)},
		{"raw", ServerConfig{RawSplit: lineSplit}, []byte("whole\n"), bytes.Repeat([]byte("x"), 40000)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sink := &memSink{}
			tc.cfg.Sink, tc.cfg.FrameTimeout = sink, 200*time.Millisecond
			addr, srv := tcpHost(t, tc.cfg)
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if _, err := c.Write(tc.first); err != nil {
				t.Fatal(err)
			}
			time.Sleep(300 * time.Millisecond) // quiet: no deadline is pending now
			if _, err := c.Write(tc.later); err != nil {
				t.Fatal(err)
			}
			testutil.Eventually(t, 5*time.Second, "the unfinished frame to time out", func() bool { return srv.Stats().TimedOut == 1 })
			testutil.Eventually(t, 5*time.Second, "its room given back", func() bool { return srv.room.Stats().Held == 0 })
		})
	}
}
