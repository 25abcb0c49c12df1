// Package hostrelay is the host half: a Server accepts any number of guest
// streams, framed (the wire protocol) or raw (socat), and hands each
// datagram whole to a sink.Sink. It keeps each guest within its limits
// (connections, hello and frame timeouts) and its budget, counts what
// each guest did, confirms delivery to v2 guests and answers their flush
// requests, and drains within a bound at Shutdown. A peer that breaks the
// protocol is logged and cut off; the others keep going.
package hostrelay
