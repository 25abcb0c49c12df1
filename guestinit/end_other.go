//go:build !linux

package guestinit

import "errors"

var rebootCmds = map[Action]int{PowerOff: 0, Reboot: 1, Halt: 2}

func rebootSyscall(int) error { return errors.New("reboot(2) is only supported on Linux") }

// Sync does nothing here.
func Sync() {}
