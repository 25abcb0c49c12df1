//go:build !linux

package systemd

import (
	"errors"
	"os"
)

var managerSignals = map[Target]int{}

func signalPID1(int) error { return errors.New("systemd is only supported on Linux") }

func devIno(*os.File) (dev, ino uint64, ok bool) { return 0, 0, false }
