//go:build !linux

// Package lowmem keeps the resident size of a katatrace process close to the
// code it runs; outside Linux it does nothing.
package lowmem

// TrimExecutable does nothing outside Linux.
func TrimExecutable() {}
