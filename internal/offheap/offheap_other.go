//go:build !linux

// Package offheap maps memory outside the Go heap where it can (Linux);
// elsewhere its buffers come from the heap.
package offheap

// Map returns n zeroed bytes.
func Map(n int) []byte { return make([]byte, n) }

// Free leaves b to the collector.
func Free([]byte) {}
