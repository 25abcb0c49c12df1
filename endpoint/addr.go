package endpoint

import (
	"fmt"
	"math"
	"net"
	"slices"
	"strconv"
	"strings"
)

// Address schemes, as they appear before "://".
const (
	SchemeVsock    = "vsock"
	SchemeUnix     = "unix"
	SchemeUnixgram = "unixgram"
	SchemeUDP      = "udp"
	SchemeTCP      = "tcp"
	SchemeFD       = "fd"
	SchemeSerial   = "serial"
	SchemeStdout   = "stdout"
)

// examples holds one valid address per scheme, for error messages.
var examples = map[string]string{
	SchemeVsock:    "vsock://2:6831",
	SchemeUnix:     "unix:///run/vc/firecracker/ID/root/kata.hvsock_6831",
	SchemeUnixgram: "unixgram:///run/katatrace/syslog.sock",
	SchemeUDP:      "udp://127.0.0.1:6831",
	SchemeTCP:      "tcp://127.0.0.1:6831",
	SchemeFD:       "fd://3",
	SchemeSerial:   "serial:///dev/ttyS1",
	SchemeStdout:   "stdout",
}

// Example returns a valid address of the given scheme.
func Example(scheme string) string { return examples[scheme] }

// PortExample is Example with port as its port, where the scheme has one:
// a role's example is then the port it serves (a hybrid-vsock socket's
// _PORT too), not Jaeger's 6831. A vsock listener (listen) takes any CID;
// a guest's host is CID 2.
func PortExample(scheme string, listen bool, port uint32) string {
	switch scheme {
	case SchemeVsock:
		if listen {
			return fmt.Sprintf("vsock://any:%d", port)
		}
		return fmt.Sprintf("vsock://2:%d", port)
	case SchemeUnix:
		return fmt.Sprintf("unix:///run/vc/firecracker/ID/root/kata.hvsock_%d", port)
	case SchemeUDP, SchemeTCP:
		if port > math.MaxUint16 {
			return examples[scheme]
		}
		return fmt.Sprintf("%s://127.0.0.1:%d", scheme, port)
	}
	return examples[scheme]
}

// maxUnixPath is the room in sockaddr_un.sun_path, less the terminating NUL.
const maxUnixPath = 107

// Addr is a parsed katatrace address. Only the fields of its Scheme are set.
type Addr struct {
	Scheme string
	// CID and Port of a vsock address; AnyCID is set for "any" or an empty
	// CID, which only a listener accepts.
	CID    uint32
	AnyCID bool
	Port   uint32
	// HostPort of a udp or tcp address, as net.Dial takes it.
	HostPort string
	// Path of a unix, unixgram or serial address. A leading '@' names a Linux
	// abstract socket.
	Path string
	// FD of an fd address (socket activation hands fds from 3 upward).
	FD int
}

// AddrError is the one error type of address parsing and use.
type AddrError struct {
	Value   string // the address as given
	Reason  string // what is wrong with it
	Example string // a valid address for the same purpose
	// Scheme is the scheme the address has, if it is a known one: empty
	// for a missing or unknown scheme.
	Scheme string
}

func (e *AddrError) Error() string {
	return fmt.Sprintf("invalid address %q: %s (example: %s)", e.Value, e.Reason, e.Example)
}

func addrErr(value, scheme, format string, args ...any) *AddrError {
	ex := examples[scheme]
	if ex == "" {
		ex = strings.Join([]string{examples[SchemeVsock], examples[SchemeUnix], examples[SchemeUDP]}, ", ")
	}
	return &AddrError{Value: value, Reason: fmt.Sprintf(format, args...), Example: ex, Scheme: scheme}
}

// ParseAddr parses an address such as vsock://2:6831, unix:///path,
// udp://127.0.0.1:6831, fd://3, serial:///dev/ttyS1 or stdout.
func ParseAddr(s string) (Addr, error) {
	if s == SchemeStdout || s == SchemeStdout+"://" {
		return Addr{Scheme: SchemeStdout}, nil
	}
	scheme, rest, ok := strings.Cut(s, "://")
	if !ok {
		return Addr{}, addrErr(s, "", "missing scheme: want vsock://, unix://, unixgram://, udp://, tcp://, fd://, serial:// or stdout")
	}
	a := Addr{Scheme: scheme}
	switch scheme {
	case SchemeVsock:
		cid, port, ok := strings.Cut(rest, ":")
		if !ok {
			return Addr{}, addrErr(s, scheme, "want vsock://CID:PORT")
		}
		switch cid {
		case "", "any":
			a.AnyCID = true
		default:
			n, err := strconv.ParseUint(cid, 10, 32)
			if err != nil || n == math.MaxUint32 {
				return Addr{}, addrErr(s, scheme, "CID %q is not a number below 4294967295 or \"any\"", cid)
			}
			a.CID = uint32(n)
		}
		n, err := strconv.ParseUint(port, 10, 32)
		if err != nil || n == math.MaxUint32 {
			return Addr{}, addrErr(s, scheme, "port %q is not a number below 4294967295", port)
		}
		a.Port = uint32(n)
	case SchemeUnix, SchemeUnixgram:
		if rest == "" {
			return Addr{}, addrErr(s, scheme, "empty socket path")
		}
		if len(rest) > maxUnixPath {
			return Addr{}, addrErr(s, scheme, "socket path is %d bytes, longer than the %d a unix socket allows", len(rest), maxUnixPath)
		}
		if strings.IndexByte(rest, 0) >= 0 {
			return Addr{}, addrErr(s, scheme, "socket path contains a NUL byte")
		}
		if !strings.HasPrefix(rest, "/") && !strings.HasPrefix(rest, "@") {
			// unix://tmp/x is the usual slip for unix:///tmp/x.
			return Addr{}, addrErr(s, scheme, "the socket path must be absolute: %s:///%s (three slashes)", scheme, rest)
		}
		a.Path = rest
	case SchemeSerial:
		if !strings.HasPrefix(rest, "/") || len(rest) < 2 || strings.IndexByte(rest, 0) >= 0 {
			return Addr{}, addrErr(s, scheme, "want an absolute device path such as /dev/ttyS1 or /dev/vport0p1")
		}
		a.Path = rest
	case SchemeUDP, SchemeTCP:
		host, port, err := net.SplitHostPort(rest)
		if err != nil {
			return Addr{}, addrErr(s, scheme, "want %s://HOST:PORT (IPv6 in brackets)", scheme)
		}
		n, err := strconv.ParseUint(port, 10, 16)
		if err != nil {
			return Addr{}, addrErr(s, scheme, "port %q is not a number from 0 to 65535", port)
		}
		if strings.ContainsAny(host, " /\x00") {
			return Addr{}, addrErr(s, scheme, "host %q is not a host name or IP address", host)
		}
		a.HostPort = net.JoinHostPort(host, strconv.FormatUint(n, 10))
	case SchemeFD:
		n, err := strconv.ParseUint(rest, 10, 31)
		if err != nil {
			return Addr{}, addrErr(s, scheme, "%q is not a file descriptor number", rest)
		}
		a.FD = int(n)
	default:
		return Addr{}, addrErr(s, "", "unknown scheme %q: want vsock, unix, unixgram, udp, tcp, fd, serial or stdout", scheme)
	}
	return a, nil
}

// String formats the address so that ParseAddr gives it back.
func (a Addr) String() string {
	switch a.Scheme {
	case "":
		return ""
	case SchemeStdout:
		return SchemeStdout
	case SchemeVsock:
		cid := "any"
		if !a.AnyCID {
			cid = strconv.FormatUint(uint64(a.CID), 10)
		}
		return fmt.Sprintf("vsock://%s:%d", cid, a.Port)
	case SchemeUDP, SchemeTCP:
		return a.Scheme + "://" + a.HostPort
	case SchemeFD:
		return "fd://" + strconv.Itoa(a.FD)
	default:
		return a.Scheme + "://" + a.Path
	}
}

// UnmarshalText lets flag parsers (kong) take an Addr directly. A flag
// names a port someone else must know, so port 0 (any free port, chosen by
// the kernel) is refused there.
func (a *Addr) UnmarshalText(b []byte) error {
	p, err := ParseAddr(string(b))
	if err != nil {
		return err
	}
	if p.Port0() {
		return addrErr(string(b), p.Scheme, "port 0 would be a port the kernel picks and nobody else knows: give the port")
	}
	*a = p
	return nil
}

// Port0 reports whether a port-carrying address has port 0.
func (a Addr) Port0() bool {
	switch a.Scheme {
	case SchemeVsock:
		return a.Port == 0
	case SchemeUDP, SchemeTCP:
		_, port, _ := net.SplitHostPort(a.HostPort)
		return port == "0"
	}
	return false
}

// MarshalText is the inverse of UnmarshalText.
func (a Addr) MarshalText() ([]byte, error) { return []byte(a.String()), nil }

// SchemeList names schemes as addresses start: "vsock://, unix:// or
// stdout".
func SchemeList(schemes ...string) string {
	want := make([]string, len(schemes))
	for i, s := range schemes {
		want[i] = s
		if s != SchemeStdout {
			want[i] += "://"
		}
	}
	if n := len(want); n > 1 {
		return strings.Join(want[:n-1], ", ") + " or " + want[n-1]
	}
	return want[0]
}

// Require reports an error when the address's scheme is not one of schemes;
// use describes what the address is for, e.g. "the guest relay reads from".
func (a Addr) Require(use string, schemes ...string) error {
	if slices.Contains(schemes, a.Scheme) {
		return nil
	}
	return &AddrError{
		Value:   a.String(),
		Reason:  fmt.Sprintf("%s %s, not %s", use, SchemeList(schemes...), SchemeList(a.Scheme)),
		Example: examples[schemes[0]],
		Scheme:  a.Scheme,
	}
}
