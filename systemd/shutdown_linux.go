package systemd

import "golang.org/x/sys/unix"

var rebootCmds = map[Action]int{
	PowerOff: unix.LINUX_REBOOT_CMD_POWER_OFF,
	Reboot:   unix.LINUX_REBOOT_CMD_RESTART,
	Halt:     unix.LINUX_REBOOT_CMD_HALT,
}

func rebootSyscall(cmd int) error { return unix.Reboot(cmd) }

// Sync flushes every file system's buffers.
func Sync() { unix.Sync() }

// sigRTMin is the C library's SIGRTMIN, which systemd's signal numbers
// count from: glibc keeps the kernel's first two real-time signals for its
// threads, so it is 34, not the kernel's 32.
const sigRTMin = 34

// managerSignals start systemd's targets, as systemd(1) lists them:
// SIGRTMIN+3 halt.target, +4 poweroff.target, +5 reboot.target.
var managerSignals = map[Action]unix.Signal{
	Halt:     sigRTMin + 3,
	PowerOff: sigRTMin + 4,
	Reboot:   sigRTMin + 5,
}

func signalPID1(sig unix.Signal) error { return unix.Kill(1, sig) }
