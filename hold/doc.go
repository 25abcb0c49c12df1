// Package hold bounds the memory a host holds for frames still arriving
// from guests it does not trust: in total, and per guest. A reader asks
// for room once a frame's announced length says it needs more than its
// small buffer of its own; the frame's bytes are read only once the room
// is granted, so that a frame that does not fit waits, unread, in the
// guest's socket, and one that was admitted is always read to its end
// (nothing waits for room it already holds). The room is mapped outside
// the Go heap, where the collector's doubling does not multiply it.
package hold
