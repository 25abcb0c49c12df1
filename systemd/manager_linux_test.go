package systemd

import (
	"errors"
	"testing"

	"golang.org/x/sys/unix"
)

// fakeManager replaces the probe and the signal for one test.
func fakeManager(t *testing.T, under bool) *[]unix.Signal {
	var sent []unix.Signal
	underManager = func() bool { return under }
	signalManager = func(sig unix.Signal) error { sent = append(sent, sig); return nil }
	t.Cleanup(func() { underManager, signalManager = underSystemd, signalPID1 })
	return &sent
}

func TestAskManagerRefusesWithoutSystemd(t *testing.T) {
	sent := fakeManager(t, false)
	if err := AskManager(PowerOffTarget); !errors.Is(err, ErrNoManager) {
		t.Fatalf("AskManager = %v, want ErrNoManager", err)
	}
	if len(*sent) != 0 {
		t.Fatalf("PID 1 was signalled (%v) although it is not this process's systemd", *sent)
	}
}

func TestAskManagerSignals(t *testing.T) {
	// systemd(1): SIGRTMIN+3 halt.target, +4 poweroff.target, +5
	// reboot.target, with glibc's SIGRTMIN of 34.
	for a, want := range map[Target]unix.Signal{HaltTarget: 37, PowerOffTarget: 38, RebootTarget: 39} {
		sent := fakeManager(t, true)
		if err := AskManager(a); err != nil {
			t.Fatalf("AskManager(%s): %v", a, err)
		}
		if len(*sent) != 1 || (*sent)[0] != want {
			t.Errorf("AskManager(%s) sent %v, want signal %d", a, *sent, want)
		}
	}
	if err := AskManager("default.target"); err == nil {
		t.Error("AskManager(default.target) did not refuse")
	}
}

func TestNotUnderSystemdHere(t *testing.T) {
	// The test runs as a child of go test, never of PID 1's systemd; were
	// this to hold, a stray AskManager could end the machine.
	if underSystemd() {
		t.Fatal("a test process believes it is a systemd service")
	}
}
