// Package offheap maps memory outside the Go heap, for large buffers a
// relay holds: there the collector neither counts them as live (raising
// the garbage it lets pile up before it runs) nor clears them, which
// would make them resident at once; a mapped page becomes resident when
// first written, and is given back to the system as soon as it is freed.
package offheap

import "golang.org/x/sys/unix"

// Map returns n zeroed bytes outside the Go heap; where mapping fails,
// from the heap.
func Map(n int) []byte {
	b, err := unix.Mmap(-1, 0, n, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return make([]byte, n)
	}
	return b
}

// Free unmaps what Map mapped; a buffer from the heap it leaves to the
// collector (Munmap refuses what it did not map).
func Free(b []byte) { _ = unix.Munmap(b) }
