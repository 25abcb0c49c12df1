// Package sim is a deterministic simulation of the relay protocol, for
// tests: the real guest relay (guestrelay: its queue, framing v2 and
// reconnects) and the real host relay (hostrelay.Host, as the host roles run it) over in-memory
// streams, fed by an in-memory datagram socket and handing on to a sink
// of the simulation's own, all inside a testing/synctest bubble, where
// time is virtual. A seed draws the fault schedule: streams cut at any
// byte or stalled, a sink that stalls, refuses, partly accepts or whose
// endpoint is down, host restarts, flushes, queues overflowing, and stops
// with drain timeouts. After each run the simulation checks what the
// design promises (see checks.go): every datagram read is delivered or
// counted, a confirmed one is never lost without a count, a flush answer
// tells the truth and a healthy host answers, and every stop keeps its
// bound and leaves nothing running. docs/design.md, "The simulation",
// says how to run and replay it.
package sim
