package systemd

import (
	"errors"
	"fmt"
	"os"
)

// Action is how a VM without systemd ends.
type Action string

// The shutdown actions. Firecracker ends a VM on reboot, not poweroff.
const (
	PowerOff Action = "poweroff"
	Reboot   Action = "reboot"
	Halt     Action = "halt"
	Exit     Action = "exit" // just exit: for a process that is not PID 1
)

// ErrNotPID1 is Shutdown refusing: only PID 1 may end the machine.
var ErrNotPID1 = errors.New("reboot(2) refused: this process is not PID 1")

// reboot is the reboot(2) system call; tests replace it.
var reboot = rebootSyscall

// Shutdown syncs the file systems and ends the machine with reboot(2), but
// only when this process is PID 1: anywhere else it returns ErrNotPID1 and
// calls nothing. In a PID namespace, reboot(2) ends only that namespace.
func Shutdown(a Action) error {
	if os.Getpid() != 1 {
		return ErrNotPID1
	}
	cmd, ok := rebootCmds[a]
	if !ok {
		return fmt.Errorf("shutdown: %q is not poweroff, reboot or halt", a)
	}
	Sync()
	if err := reboot(cmd); err != nil {
		return fmt.Errorf("reboot(2) %s: %w", a, err)
	}
	return nil
}
