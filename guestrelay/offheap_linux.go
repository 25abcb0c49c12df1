package guestrelay

import "golang.org/x/sys/unix"

// offHeap maps n zeroed bytes outside the Go heap, for a queue's ring: in
// the heap it would count as live (raising the garbage the collector lets
// pile up before it runs), and where the heap reuses memory for it, it
// would be cleared, so made resident, at once; mapped, a page becomes
// resident when first written. free unmaps it; where mapping fails, the
// buffer comes from the heap.
func offHeap(n int) (b []byte, free func()) {
	b, err := unix.Mmap(-1, 0, n, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return make([]byte, n), func() {}
	}
	return b, func() { _ = unix.Munmap(b) }
}
