package hold

import "golang.org/x/sys/unix"

// mapped maps n zeroed bytes outside the Go heap: there, room given back
// is given back to the system at once, and the collector neither scans it
// nor lets twice as much pile up because of it. Where mapping fails, the
// room comes from the heap.
func mapped(n int) []byte {
	b, err := unix.Mmap(-1, 0, n, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return make([]byte, n)
	}
	return b
}

// release unmaps what mapped mapped (a heap buffer it leaves to the
// collector: Munmap refuses what it did not map).
func release(b []byte) { _ = unix.Munmap(b) }
