package roles

import (
	"fmt"
	"os"
	"strings"
	"syscall"
)

// reloadCmd sends SIGHUP to a running role: the units' ExecReload=, with
// no kill(1) needed in the image.
type reloadCmd struct {
	PID int `arg:"" help:"The role's process ID (systemd's $MAINPID)."`
}

// Validate's errors are the command's already: kong puts "reload:" first.
func (r *reloadCmd) Validate() error {
	switch {
	case r.PID == 0:
		// kong checks arguments after Validate: an empty $MAINPID lands here.
		return fmt.Errorf("no process ID given (or 0): katatrace reload PID (a unit's ExecReload= gives $MAINPID)")
	case r.PID <= 1:
		return fmt.Errorf("%d is not a role's process ID (PID 1 and below are never signalled)", r.PID)
	}
	return nil
}

// Run signals the process once its name says it is a role (a pid reused
// by another program is left alone). The name is the kernel's (comm, 15
// bytes of the program's name): readable in a sandboxed unit, where the
// process's executable is not.
func (r *reloadCmd) Run(rc *RunContext) error {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", r.PID))
	if err != nil {
		return fmt.Errorf("reload: process %d: %w", r.PID, err)
	}
	comm := strings.TrimSpace(string(b))
	if !isRoleName(comm) {
		return fmt.Errorf("reload: process %d is %s, not katatrace: not signalled", r.PID, comm)
	}
	if err := syscall.Kill(r.PID, syscall.SIGHUP); err != nil {
		return fmt.Errorf("reload: signal process %d: %w", r.PID, err)
	}
	return nil
}

// isRoleName reports whether comm, a program name as the kernel keeps it
// (at most 15 bytes), is katatrace's or one of its roles'.
func isRoleName(comm string) bool {
	if comm == BinaryName {
		return true
	}
	for _, r := range All() {
		if strings.HasPrefix(r.Name, comm) && (len(comm) == len(r.Name) || len(comm) == 15) {
			return true
		}
	}
	return false
}
