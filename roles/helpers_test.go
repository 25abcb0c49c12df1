package roles_test

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"

	"github.com/katatrace/katatrace/internal/spanagent"
	"github.com/katatrace/katatrace/wire"
)

// marker appends "NAME N" to FILE, N being how many root spans of the shim
// HOSTFILE (a host relay's JSONL) holds: marker FILE NAME HOSTFILE.
func marker(args []string) int {
	f, err := os.OpenFile(args[0], os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return 1
	}
	defer f.Close()
	host, _ := os.ReadFile(args[2])
	fmt.Fprintln(f, args[1], strings.Count(string(host), `"operation":"kata-agent"`))
	return 0
}

// flood sends SIZE-byte datagrams to udp 127.0.0.1:PORT as fast as it
// can until killed: flood PORT SIZE.
func flood(args []string) int {
	c, err := net.Dial("udp", "127.0.0.1:"+args[0])
	if err != nil {
		return 1
	}
	size, _ := strconv.Atoi(args[1])
	p := make([]byte, size)
	p[0] = 0xff
	for {
		_, _ = c.Write(p)
	}
}

// floodFrames writes SIZE-byte v1 frames to the host relay at unix SOCKET
// as fast as it can, holding N connections, until killed: a hostile guest
// that needs no relay: flood-frames SOCKET SIZE N.
func floodFrames(args []string) int {
	size, _ := strconv.Atoi(args[1])
	n, _ := strconv.Atoi(args[2])
	buf := wire.AppendHello(nil, wire.KindJaeger)
	p := make([]byte, size)
	p[0] = 0xff
	for range 64 {
		buf = wire.AppendFrame(buf, p)
	}
	for range n - 1 {
		go floodConn(args[0], buf)
	}
	floodConn(args[0], buf)
	return 1
}

func floodConn(path string, buf []byte) {
	c, err := net.Dial("unix", path)
	if err != nil {
		return
	}
	hello := len(wire.AppendHello(nil, wire.KindJaeger))
	_, _ = c.Write(buf[:hello])
	for {
		if _, err := c.Write(buf[hello:]); err != nil {
			return
		}
	}
}

// testHelpers are the helper programs the test binary is when called by
// these names (symlinks made by bin).
var testHelpers = map[string]func(args []string) int{
	"katatrace-test-agent":        spanagent.Main,
	"katatrace-test-marker":       marker,
	"katatrace-test-flood":        flood,
	"katatrace-test-flood-frames": floodFrames,
}
