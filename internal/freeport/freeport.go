package freeport

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
)

// Pick returns a port of network ("udp" or "tcp") on 127.0.0.1 that is
// free now and outside the ephemeral range.
func Pick(network string) (int, error) {
	lo := ephemeralLow()
	const floor = 10000
	if lo <= floor+1000 {
		lo = 65536 // the range starts low: pick above it instead
	}
	for range 100 {
		var port int
		if lo == 65536 {
			port = 61000 + rand.IntN(4000)
		} else {
			port = floor + rand.IntN(lo-floor)
		}
		if free(network, port) {
			return port, nil
		}
	}
	return 0, fmt.Errorf("no free %s port found on 127.0.0.1", network)
}

func free(network string, port int) bool {
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	if network == "udp" {
		c, err := net.ListenPacket("udp", addr)
		if err != nil {
			return false
		}
		return c.Close() == nil
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return false
	}
	return l.Close() == nil
}

// ephemeralLow is the first port of the kernel's ephemeral range.
func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 32768
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 32768
	}
	lo, err := strconv.Atoi(f[0])
	if err != nil {
		return 32768
	}
	return lo
}
