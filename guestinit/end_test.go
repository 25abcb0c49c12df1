package guestinit

import (
	"errors"
	"os"
	"testing"
)

func TestEndNeverRebootsUnlessPID1(t *testing.T) {
	if os.Getpid() == 1 {
		t.Skip("this test is about not being PID 1")
	}
	called := false
	reboot = func(int) error { called = true; return nil }
	t.Cleanup(func() { reboot = rebootSyscall })
	for _, a := range []Action{PowerOff, Reboot, Halt} {
		// A test process is neither PID 1 nor a systemd service.
		if how, err := End(a); !errors.Is(err, ErrCannotEnd) || how != "" {
			t.Fatalf("End(%s) = %q, %v; want ErrCannotEnd", a, how, err)
		}
	}
	if called {
		t.Fatal("reboot(2) was reached outside PID 1")
	}
	if _, err := End(Action(9)); err == nil {
		t.Fatal("End of an unknown action did not refuse")
	}
}
