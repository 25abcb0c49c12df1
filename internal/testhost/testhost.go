package testhost

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/katatrace/katatrace/internal/testutil"
	"github.com/katatrace/katatrace/sink"
)

// Host is a running host relay.
type Host struct {
	Sock string // where it listens: unix://Sock
	out  string
	Proc *testutil.Proc
}

// Start runs the host relay (the katatrace binary, or a symlink named
// vsock-to-udp-server) listening on a socket named sockName in a short
// directory, and waits until it listens; it is stopped when the test ends.
func Start(t testing.TB, env []string, bin, sockName string) *Host {
	t.Helper()
	dir := testutil.SockDir(t)
	h := &Host{Sock: filepath.Join(dir, sockName), out: filepath.Join(dir, "spans.jsonl")}
	f, err := os.Create(h.out)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	// QEMU connects as the VM starts and the guest relay first writes
	// once the guest has booted: on a loaded machine that is later than
	// the default hello timeout, which would close the serial link.
	args := []string{"--from", "unix://" + h.Sock, "--to", "jsonl", "--hello-timeout", "10m"}
	if filepath.Base(bin) != "vsock-to-udp-server" {
		args = append([]string{"vsock-to-udp-server"}, args...)
	}
	h.Proc = testutil.StartTo(t, f, env, bin, args...)
	h.Proc.WaitLog("listening")
	return h
}

// Out is the JSON lines file.
func (h *Host) Out() string { return h.out }

// Spans is every span the host has written so far.
func (h *Host) Spans(t testing.TB) []sink.SpanRecord {
	t.Helper()
	recs, err := sink.ReadJSONLFile(h.out)
	if err != nil {
		t.Fatal(err)
	}
	return recs
}
