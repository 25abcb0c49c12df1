package guestinit

import (
	"errors"
	"fmt"
	"os"

	"github.com/katatrace/katatrace/systemd"
)

// Action is how the VM ends.
type Action int

// The actions. Firecracker ends a VM on reboot: it has no power-off.
const (
	PowerOff Action = iota
	Reboot
	Halt
)

func (a Action) String() string {
	switch a {
	case PowerOff:
		return "poweroff"
	case Reboot:
		return "reboot"
	case Halt:
		return "halt"
	}
	return fmt.Sprintf("Action(%d)", int(a))
}

var targets = map[Action]systemd.Target{PowerOff: systemd.PowerOffTarget, Reboot: systemd.RebootTarget, Halt: systemd.HaltTarget}

// ErrCannotEnd is End refusing: this process is neither PID 1 nor a
// service of systemd, so ending the machine is not its business.
var ErrCannotEnd = errors.New("neither PID 1 nor a service of systemd: the VM is not this process's to end")

// reboot is the reboot(2) system call; tests replace it.
var reboot = rebootSyscall

// End ends the VM, after a sync. As PID 1 it calls reboot(2) (in a PID
// namespace that ends only the namespace) and returns only on failure; as a
// service of systemd it asks systemd to end the VM in order (every unit
// stopped, this one included) and returns at once; anywhere else it
// refuses, calling nothing. how says which it was.
func End(a Action) (how string, err error) {
	if _, ok := targets[a]; !ok {
		return "", fmt.Errorf("end the VM: %v is not poweroff, reboot or halt", a)
	}
	switch {
	case os.Getpid() == 1:
		Sync()
		if err := reboot(rebootCmds[a]); err != nil {
			return "reboot(2)", fmt.Errorf("reboot(2) %s: %w", a, err)
		}
		return "reboot(2)", nil
	case systemd.UnderManager():
		Sync()
		return "systemd", systemd.AskManager(targets[a])
	}
	return "", ErrCannotEnd
}
