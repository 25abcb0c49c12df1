//go:build !linux

package systemd

// TrimResidentCode does nothing outside Linux.
func TrimResidentCode() (int, error) { return 0, nil }
