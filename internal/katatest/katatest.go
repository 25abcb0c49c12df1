// Package katatest gives tests the streams Kata's own vsock-exporter wrote
// (kataspan/testdata), and sends them as an agent does.
package katatest

import (
	"net"
	"os"
	"path/filepath"
	"runtime"
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
