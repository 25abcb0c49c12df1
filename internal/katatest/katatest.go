// Package katatest gives tests the streams Kata's own vsock-exporter wrote
// (kataspan/testdata), and sends them as an agent does.
package katatest

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/katatrace/katatrace/internal/testutil"
)

// Capture is a stream Kata's vsock-exporter wrote: six frames, one trace
// (five children, then the root). name is one of json-otel017-api,
// json-otel017-tracing, bincode-otel014-api, bincode-otel014-tracing.
func Capture(t testing.TB, name string) []byte {
	t.Helper()
	_, here, _, _ := runtime.Caller(0)
	b, err := os.ReadFile(filepath.Join(filepath.Dir(here), "..", "..", "kataspan", "testdata", name+".bin"))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Send writes a span stream to the unix socket at path (hybrid vsock), as
// an agent does, once the socket is there.
func Send(t testing.TB, path string, b []byte) {
	t.Helper()
	testutil.Eventually(t, 10*time.Second, "the forwarder's socket "+path, func() bool { _, err := os.Stat(path); return err == nil })
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write(b); err != nil {
		t.Fatal(err)
	}
}

// Frames is a capture's payloads, in order.
func Frames(t testing.TB, name string) [][]byte {
	t.Helper()
	var out [][]byte
	for b := Capture(t, name); len(b) > 0; {
		n := binary.BigEndian.Uint64(b)
		out, b = append(out, b[8:8+n]), b[8+n:]
	}
	return out
}

// WithFirstByte is a trace's bincode frames with their trace id's lowest
// byte (a bincode payload's first) set to v: the same trace, another id.
func WithFirstByte(frames [][]byte, v byte) [][]byte {
	out := make([][]byte, len(frames))
	for i, p := range frames {
		out[i] = append([]byte{v}, p[1:]...)
	}
	return out
}

// Agent writes a span stream as Kata's vsock-exporter does: on one
// connection, each frame's header, then its payload. Its first failed
// write is kept: the real exporter would never send again (Check).
type Agent struct {
	t    testing.TB
	conn net.Conn
	err  error
}

// DialAgent connects to the forwarder's unix socket at path (hybrid
// vsock), once it is there.
func DialAgent(t testing.TB, path string) *Agent {
	t.Helper()
	testutil.Eventually(t, 10*time.Second, "the forwarder's socket "+path, func() bool { _, err := os.Stat(path); return err == nil })
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &Agent{t: t, conn: c}
}

// Write writes b as it is; after a failed write, nothing.
func (a *Agent) Write(b []byte) {
	if a.err == nil {
		_, a.err = a.conn.Write(b)
	}
}

// Send writes frames, header and payload apart.
func (a *Agent) Send(frames ...[]byte) {
	for _, p := range frames {
		a.Write(binary.BigEndian.AppendUint64(nil, uint64(len(p))))
		a.Write(p)
	}
}

// WaitRead waits until the host has read everything the agent wrote (the
// socket's send queue is empty: SIOCOUTQ).
func (a *Agent) WaitRead() {
	a.t.Helper()
	testutil.Eventually(a.t, 10*time.Second, "the host to read what the agent wrote", func() bool {
		return unreadBytes(a.conn) == 0
	})
}

// Failed is the agent's first failed write, and whether the host has
// closed its connection: nothing ever comes back on it, so a read times
// out while it is open.
func (a *Agent) Failed() (write error, closed bool) {
	_ = a.conn.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	defer a.conn.SetReadDeadline(time.Time{})
	var b [1]byte
	_, err := a.conn.Read(b[:])
	return a.err, !errors.Is(err, os.ErrDeadlineExceeded)
}

// Check fails the test if a write failed or the host closed the
// connection.
func (a *Agent) Check() {
	a.t.Helper()
	if werr, closed := a.Failed(); werr != nil || closed {
		a.t.Fatalf("the agent's connection failed (write: %v; closed by the host: %v): its exporter would never send again", werr, closed)
	}
}

// GeneratedTrace is a stream of n children and a root in the JSON form of
// opentelemetry 0.17's SpanData, with a random trace id of 128 bits.
func GeneratedTrace(n int) (traceID string, stream []byte) {
	var id [16]byte
	_, _ = rand.Read(id[:])
	id[0] |= 0x80 // a u128 past 2^127: 39 digits
	tid := new(big.Int).SetBytes(id[:]).String()
	now := time.Now()
	span := func(name string, spanID, parent uint64, attrs string) []byte {
		return fmt.Appendf(nil, `{"span_context":{"trace_id":%s,"span_id":%d,"trace_flags":1,"is_remote":false,"trace_state":null},`+
			`"parent_span_id":%d,"span_kind":"Internal","name":%q,`+
			`"start_time":{"secs_since_epoch":%d,"nanos_since_epoch":%d},"end_time":{"secs_since_epoch":%d,"nanos_since_epoch":%d},`+
			`"attributes":{"map":{%s},"evict_list":[],"max_len":128,"dropped_count":0},`+
			`"events":{"queue":[{"name":"step","timestamp":{"secs_since_epoch":%d,"nanos_since_epoch":0},"attributes":[{"key":"level","value":{"String":"INFO"}}],"dropped_attributes_count":0}],"max_len":128,"dropped_count":0},`+
			`"links":{"queue":null,"max_len":128,"dropped_count":0},"status_code":"Unset","status_message":"",`+
			`"resource":{"attrs":{"service.name":{"String":"unknown_service"}}}}`,
			tid, spanID, parent, name, now.Unix(), now.Nanosecond(), now.Unix(), now.Nanosecond()+1000, attrs, now.Unix())
	}
	const root = uint64(1<<63 + 1) // past an int64
	for i := range n {
		p := span(fmt.Sprintf("child-%d", i), root+uint64(i)+1, root, fmt.Sprintf(`"n":{"I64":%d},"big":{"String":%q}`, i, strings.Repeat("z", 500)))
		stream = append(binary.BigEndian.AppendUint64(stream, uint64(len(p))), p...)
	}
	if n > 0 {
		p := span("root", root, 0, `"root":{"Bool":true}`)
		stream = append(binary.BigEndian.AppendUint64(stream, uint64(len(p))), p...)
	}
	return fmt.Sprintf("%032x", id), stream
}
