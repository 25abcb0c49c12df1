//go:build !linux

package systemd

import (
	"context"
	"errors"
)

func notifyVsock(context.Context, NotifyAddr, string) error {
	return errors.New("vsock is only supported on Linux")
}
