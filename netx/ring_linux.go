package netx

import "golang.org/x/sys/unix"

// newRing maps n bytes outside the Go heap: a queue's ring is mostly idle
// memory, and in the heap it would count as live (raising the garbage the
// collector lets pile up before it runs) and would be zeroed (and so made
// resident) whenever the heap reuses memory for it. Pages become resident
// when written. free unmaps it; where mapping fails, the ring comes from
// the heap.
func newRing(n int) (ring []byte, free func()) {
	b, err := unix.Mmap(-1, 0, n, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return make([]byte, n), func() {}
	}
	return b, func() { _ = unix.Munmap(b) }
}
