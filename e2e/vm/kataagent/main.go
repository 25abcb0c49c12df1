// Command kataagent stands in for a Kata 2.x+ agent's span exporter inside
// the systemd test VM: one connection to vsock port 10240 of CID 1 (the
// guest's own loopback, where the forwarder's shipped unit listens), or,
// with -unix, to a hybrid-vsock VM's PATH_10240 as its VMM would connect
// it, never another, each frame's header written and then its payload, as Kata's
// vsock-exporter writes them. It replays the streams Kata's exporter wrote
// (DIR/NAME.bin), a step per line of its standard input:
//
//	send NAME FROM TO   frames FROM to TO-1, whole
//	part NAME I         frame I's header and half its payload
//	rest NAME I         the rest of frame I
//	check               say whether every write was taken and the host
//	                    has not closed the connection
//
// A failed write is said at once and ends it: the real exporter would
// never send again.
package main

import (
	"bufio"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/mdlayher/vsock"
)

func main() {
	dir := flag.String("dir", "/usr/lib/katatrace-test", "where the captured streams are")
	cid := flag.Uint("cid", 1, "the forwarder's vsock CID (1: this guest's loopback)")
	port := flag.Uint("port", 10240, "the forwarder's vsock port")
	unixPath := flag.String("unix", "", "connect to this unix socket (a hybrid-vsock VM's PATH_10240) instead of vsock")
	traceByte := flag.Int("trace-byte", -1, "set every bincode payload's first byte (its trace id's lowest) to this: the same trace, another id")
	flag.Parse()
	say := func(format string, args ...any) { fmt.Printf("kataagent: "+format+"\n", args...) }
	var conn net.Conn
	var err error
	if *unixPath != "" {
		conn, err = net.Dial("unix", *unixPath)
	} else {
		conn, err = vsock.Dial(uint32(*cid), uint32(*port), nil)
	}
	if err != nil {
		say("connect failed: %v", err)
		os.Exit(1)
	}
	say("connected to %s", conn.RemoteAddr())
	frames := map[string][][]byte{}
	load := func(name string) [][]byte {
		if fs, ok := frames[name]; ok {
			return fs
		}
		b, err := os.ReadFile(filepath.Join(*dir, name+".bin"))
		if err != nil {
			say("%v", err)
			os.Exit(1)
		}
		var fs [][]byte
		for len(b) >= 8 {
			n := binary.BigEndian.Uint64(b)
			fr := b[:8+n]
			if *traceByte >= 0 && strings.HasPrefix(name, "bincode") {
				fr[8] = byte(*traceByte)
			}
			fs, b = append(fs, fr), b[8+n:]
		}
		frames[name] = fs
		return fs
	}
	writes := 0
	write := func(b []byte) {
		if _, err := conn.Write(b); err != nil {
			say("write failed after %d writes: %v", writes, err)
			os.Exit(1)
		}
		writes++
	}
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 {
			continue
		}
		num := func(i int) int {
			n, err := strconv.Atoi(f[i])
			if err != nil {
				say("bad step %q", sc.Text())
				os.Exit(2)
			}
			return n
		}
		switch f[0] {
		case "send":
			for _, fr := range load(f[1])[num(2):num(3)] {
				write(fr[:8])
				write(fr[8:])
			}
		case "part":
			fr := load(f[1])[num(2)]
			write(fr[:8])
			write(fr[8 : 8+(len(fr)-8)/2])
		case "rest":
			fr := load(f[1])[num(2)]
			write(fr[8+(len(fr)-8)/2:])
		case "check":
			_ = conn.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
			var b [1]byte
			_, err := conn.Read(b[:])
			_ = conn.SetReadDeadline(time.Time{})
			if !errors.Is(err, os.ErrDeadlineExceeded) {
				say("the host closed the connection: %v", err)
				os.Exit(1)
			}
			say("connection open, %d writes taken, none failed", writes)
		default:
			say("unknown step %q", sc.Text())
			os.Exit(2)
		}
		say("done: %s", sc.Text())
	}
}
