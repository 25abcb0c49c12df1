//go:build !linux

package lowmem

// TrimExecutable does nothing outside Linux.
func TrimExecutable() {}
