package roles

import (
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// reloadCmd sends SIGHUP to a running role: the units' ExecReload=, with
// no kill(1) needed in the image.
type reloadCmd struct {
	PID int `arg:"" help:"The role's process ID (systemd's $MAINPID)."`
}

func (r *reloadCmd) Validate() error {
	if r.PID <= 1 {
		return fmt.Errorf("reload: %d is not a role's process ID (PID 1 and below are never signalled)", r.PID)
	}
	return nil
}

// Run signals the process, once it is known to be this binary (a pid
// reused by another program is left alone).
func (r *reloadCmd) Run(rc *RunContext) error {
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("reload: find this binary: %w", err)
	}
	exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", r.PID))
	if err != nil {
		return fmt.Errorf("reload: process %d: %w", r.PID, err)
	}
	if same(self, exe) {
		if err := syscall.Kill(r.PID, syscall.SIGHUP); err != nil {
			return fmt.Errorf("reload: signal process %d: %w", r.PID, err)
		}
		return nil
	}
	return fmt.Errorf("reload: process %d runs %s, not katatrace (%s): not signalled", r.PID, exe, self)
}

// same reports whether two paths name the same file.
func same(a, b string) bool {
	ra, err1 := filepath.EvalSymlinks(a)
	rb, err2 := filepath.EvalSymlinks(b)
	if err1 != nil || err2 != nil {
		return a == b
	}
	fa, err1 := os.Stat(ra)
	fb, err2 := os.Stat(rb)
	return err1 == nil && err2 == nil && os.SameFile(fa, fb)
}
