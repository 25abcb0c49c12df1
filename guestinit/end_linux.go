package guestinit

import "golang.org/x/sys/unix"

var rebootCmds = map[Action]int{
	PowerOff: unix.LINUX_REBOOT_CMD_POWER_OFF,
	Reboot:   unix.LINUX_REBOOT_CMD_RESTART,
	Halt:     unix.LINUX_REBOOT_CMD_HALT,
}

func rebootSyscall(cmd int) error { return unix.Reboot(cmd) }

// Sync flushes every file system's buffers.
func Sync() { unix.Sync() }
