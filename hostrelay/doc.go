// Package hostrelay is the host half: a Server accepts any number of guest
// streams, framed (the wire protocol) or raw (socat), or message streams
// of their own framing (Kata agents' spans, never closed by the host), and
// hands each datagram or message whole to a sink.Sink. It keeps each guest
// within its limits (connections, hello and frame timeouts) and its
// budget, counts what each guest did, confirms delivery to v2 guests and
// answers their flush requests. At a stop it reads what was waiting and
// closes (Shutdown) or, with a file descriptor store, hands every
// connection and its state to the next process (Handover), which takes
// them up (Adopt). A Host is a host relay's whole life around its Server:
// listeners and watched patterns (injectable), adoption, readiness,
// reload, and a stop within one bound that leaves the sink its share. A
// peer that breaks the protocol is logged and cut off; the others keep
// going.
package hostrelay
