package roles

import (
	"testing"

	"github.com/katatrace/katatrace/systemd"
)

func TestShutdownAction(t *testing.T) {
	tests := []struct {
		flag                string
		pid1, managed, stat bool
		want                systemd.Action
	}{
		{"auto", true, false, false, systemd.PowerOff},      // init: the VM must end
		{"auto", false, true, true, systemd.PowerOff},       // systemd, static: as Kata's ExecStop
		{"auto", false, true, false, systemd.Exit},          // systemd, dynamic: the runtime ends it
		{"auto", false, false, true, systemd.Exit},          // a plain process
		{"reboot", false, true, false, systemd.Reboot},      // asked for: Firecracker
		{"poweroff", false, false, false, systemd.PowerOff}, // asked for (refused later without systemd)
		{"exit", false, true, true, systemd.Exit},           // the operator keeps the VM
	}
	for _, tt := range tests {
		c := &agentTracer{Shutdown: tt.flag}
		if got := c.action(tt.pid1, tt.managed, tt.stat); got != tt.want {
			t.Errorf("--shutdown=%s pid1=%v systemd=%v static=%v: %s, want %s", tt.flag, tt.pid1, tt.managed, tt.stat, got, tt.want)
		}
	}
}
