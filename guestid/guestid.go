package guestid

import (
	"fmt"
	"net"
	"strconv"
	"strings"

	"github.com/katatrace/katatrace/endpoint"
)

// ID is one guest connection as the host knows it.
type ID struct {
	// Guest is the VM, the key of its limits, budget, counters and held
	// spans: a vsock CID ("vsock:vm(3)"); the process connected to a
	// hybrid-vsock socket, a VMM ("unix:///run/vc/vm/SID/clh.sock_10240
	// pid 42"); a TCP peer's host ("tcp:10.0.0.5"), or on loopback, where
	// every local process shares the address, the connection itself.
	Guest string
	// Conn is the connection, unique while the process (and a successor
	// that adopted it) serves it: the peer's address, or for unnamed unix
	// peers the listener and Seq ("unix:///…_10240#7").
	Conn string
	// Listener is the address the connection came to (a --from, or the
	// socket made beside a VM's); Seq numbers the host's connections.
	Listener string
	Seq      uint64
	// Sandbox is the VM's Kata sandbox ID where the host knows it (the
	// host relay finds it once per guest: package sandboxid), else "".
	Sandbox string
}

// Of names conn, accepted on listener as the host's seq-th connection.
func Of(conn net.Conn, listener string, seq uint64) ID {
	return ID{Guest: guestOf(conn, listener), Conn: connOf(conn, listener, seq), Listener: listener, Seq: seq}
}

// Named is an ID for a name alone (tests, and sinks fed outside a host
// relay): guest and connection are both name.
func Named(name string) ID { return ID{Guest: name, Conn: name} }

// String is the connection's name, as logs give a peer.
func (id ID) String() string { return id.Conn }

func guestOf(conn net.Conn, listener string) string {
	if ra := conn.RemoteAddr(); ra != nil {
		if host, _, err := net.SplitHostPort(ra.String()); err == nil && host != "" {
			if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
				return ra.Network() + ":" + ra.String()
			}
			return ra.Network() + ":" + host
		}
	}
	if p := endpoint.UnixPeer(conn); p != "" {
		return listener + " " + p
	}
	return listener
}

func connOf(conn net.Conn, listener string, seq uint64) string {
	ra := conn.RemoteAddr()
	if ra == nil || ra.String() == "" || ra.String() == "@" {
		// Unix peers are unnamed: the listener path says which VM it is.
		return listener + "#" + strconv.FormatUint(seq, 10)
	}
	return ra.Network() + ":" + ra.String()
}

// StoreName is the name the connection has in systemd's file descriptor
// store: prefix, the connection's number and its listener, escaped as an
// FDNAME must be (printable ASCII, no ':', at most 255 bytes).
func (id ID) StoreName(prefix string) string {
	return prefix + strconv.FormatUint(id.Seq, 10) + "." + escape(id.Listener)
}

// ListenerStoreName is the name a listener has in the store: prefix and
// the listener, escaped as StoreName escapes it.
func ListenerStoreName(prefix, listener string) string { return prefix + escape(listener) }

// ParseStoreName reads what StoreName wrote after prefix: the connection's
// number and listener.
func ParseStoreName(prefix, name string) (seq uint64, listener string, err error) {
	rest, ok := strings.CutPrefix(name, prefix)
	num, enc, ok2 := strings.Cut(rest, ".")
	if !ok || !ok2 {
		return 0, "", fmt.Errorf("stored connection %q: want %sNUMBER.LISTENER", name, prefix)
	}
	if seq, err = strconv.ParseUint(num, 10, 64); err != nil {
		return 0, "", fmt.Errorf("stored connection %q: %q is not a number", name, num)
	}
	if listener, err = unescape(enc); err != nil {
		return 0, "", fmt.Errorf("stored connection %q: %w", name, err)
	}
	return seq, listener, nil
}

// escape percent-encodes what an FDNAME may not hold: ':' (the separator
// of LISTEN_FDNAMES), '%' itself, and bytes outside printable ASCII.
func escape(s string) string {
	var b strings.Builder
	for i := range len(s) {
		switch c := s[i]; {
		case c == ':' || c == '%' || c < ' ' || c > '~':
			fmt.Fprintf(&b, "%%%02X", c)
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

func unescape(s string) (string, error) {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '%' {
			b.WriteByte(s[i])
			continue
		}
		if i+3 > len(s) {
			return "", fmt.Errorf("%q: a %% without two hex digits", s)
		}
		v, err := strconv.ParseUint(s[i+1:i+3], 16, 8)
		if err != nil {
			return "", fmt.Errorf("%q: %q is not an escape", s, s[i:i+3])
		}
		b.WriteByte(byte(v))
		i += 2
	}
	return b.String(), nil
}
