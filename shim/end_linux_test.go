package shim

import (
	"testing"

	"github.com/katatrace/katatrace/guestinit"
)

func TestShutdownEnding(t *testing.T) {
	tests := []struct {
		flag                string
		pid1, managed, stat bool
		action              guestinit.Action
		end                 bool
	}{
		{"auto", true, false, false, guestinit.PowerOff, true},      // init: the VM must end
		{"auto", false, true, true, guestinit.PowerOff, true},       // systemd, static: as Kata's ExecStop
		{"auto", false, true, false, guestinit.PowerOff, false},     // systemd, dynamic: the runtime ends it
		{"auto", false, false, true, guestinit.PowerOff, false},     // a plain process
		{"reboot", false, true, false, guestinit.Reboot, true},      // asked for: Firecracker
		{"halt", true, false, false, guestinit.Halt, true},          // asked for
		{"poweroff", false, false, false, guestinit.PowerOff, true}, // asked for (refused later without systemd)
		{"exit", false, true, true, guestinit.PowerOff, false},      // the operator keeps the VM
		{"exit", true, false, false, guestinit.PowerOff, true},      // but PID 1 cannot exit
	}
	for _, tt := range tests {
		c := &shim{Config{Shutdown: tt.flag}}
		if action, end := c.ending(tt.pid1, tt.managed, tt.stat); action != tt.action || end != tt.end {
			t.Errorf("--shutdown=%s pid1=%v systemd=%v static=%v: %s, %v; want %s, %v",
				tt.flag, tt.pid1, tt.managed, tt.stat, action, end, tt.action, tt.end)
		}
	}
}
