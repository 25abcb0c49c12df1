package systemd

import (
	"os"

	"golang.org/x/sys/unix"
)

// sigRTMin is the C library's SIGRTMIN, which systemd's signal numbers
// count from: glibc keeps the kernel's first two real-time signals for its
// threads, so it is 34, not the kernel's 32.
const sigRTMin = 34

// managerSignals start systemd's targets, as systemd(1) lists them:
// SIGRTMIN+3 halt.target, +4 poweroff.target, +5 reboot.target.
var managerSignals = map[Target]unix.Signal{
	HaltTarget:     sigRTMin + 3,
	PowerOffTarget: sigRTMin + 4,
	RebootTarget:   sigRTMin + 5,
}

func signalPID1(sig unix.Signal) error { return unix.Kill(1, sig) }

// devIno is f's device and inode.
func devIno(f *os.File) (dev, ino uint64, ok bool) {
	rc, err := f.SyscallConn()
	if err != nil {
		return 0, 0, false
	}
	var st unix.Stat_t
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = unix.Fstat(int(fd), &st) }); err != nil || serr != nil {
		return 0, 0, false
	}
	return uint64(st.Dev), st.Ino, true
}
