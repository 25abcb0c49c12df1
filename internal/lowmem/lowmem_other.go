//go:build !linux

package lowmem

// TrimExecutable does nothing outside Linux.
func TrimExecutable() {}

// Settle does nothing outside Linux.
func Settle() {}

// TrimEvery does nothing outside Linux.
func TrimEvery(ns int64) {}
