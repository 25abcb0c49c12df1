//go:build !linux

package systemd

import "errors"

var managerSignals = map[Target]int{}

func signalPID1(int) error { return errors.New("systemd is only supported on Linux") }
