package roles

import (
	"fmt"

	"github.com/katatrace/katatrace/endpoint"
)

// textSink is the --to of vsock-to-text-server: where its lines go.
type textSink struct{ endpoint.Addr }

func (t *textSink) UnmarshalText(b []byte) error {
	switch s := string(b); s {
	case "print", "jsonl", "http", "https":
		return fmt.Errorf("%q is a Jaeger sink of vsock-to-udp-server; the text server writes lines to stdout (the default), udp://HOST:PORT or unixgram:///path (a syslog socket)", s)
	}
	return t.Addr.UnmarshalText(b)
}
