package systemd

import (
	"errors"
	"fmt"
	"os"
	"strings"
)

// ErrNoManager is AskManager refusing: this process is not a service of
// systemd running as PID 1, so there is nobody to ask.
var ErrNoManager = errors.New("not a service of systemd (PID 1 is not systemd, or this process is not its child)")

// Probing and signalling PID 1 are seams: tests replace them, so that no
// test can ever end the machine it runs on.
var (
	underManager  = underSystemd
	signalManager = signalPID1
)

// UnderManager reports whether this process is a service of systemd running
// as PID 1: systemd booted the machine (/run/systemd/system, as
// sd_booted(3) checks), PID 1 is systemd, and it is this process's parent.
func UnderManager() bool { return underManager() }

func underSystemd() bool {
	if os.Getpid() == 1 || os.Getppid() != 1 {
		return false
	}
	if fi, err := os.Stat("/run/systemd/system"); err != nil || !fi.IsDir() {
		return false
	}
	comm, err := os.ReadFile("/proc/1/comm")
	return err == nil && strings.TrimSpace(string(comm)) == "systemd"
}

// Target is a target that ends the machine.
type Target string

// The targets AskManager starts.
const (
	PowerOffTarget Target = "poweroff.target"
	RebootTarget   Target = "reboot.target"
	HaltTarget     Target = "halt.target"
)

// AskManager asks systemd to start t, ending the machine in order (every
// unit is stopped, file systems are unmounted), as `systemctl poweroff`
// does, and returns at once. It needs neither systemctl nor D-Bus:
// systemd(1) documents signals for it. It refuses, calling nothing, unless
// UnderManager holds.
func AskManager(t Target) error {
	sig, ok := managerSignals[t]
	if !ok {
		return fmt.Errorf("ask systemd: %q is not poweroff.target, reboot.target or halt.target", t)
	}
	if !UnderManager() {
		return ErrNoManager
	}
	if err := signalManager(sig); err != nil {
		return fmt.Errorf("ask systemd for %s: %w", t, err)
	}
	return nil
}
