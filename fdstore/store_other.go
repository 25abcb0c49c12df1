//go:build !linux

package fdstore

import (
	"errors"
	"os"
)

var errNoStore = errors.New("systemd's file descriptor store is only supported on Linux")

func send(string, string, int) error { return errNoStore }

// WriteState is only supported on Linux.
func WriteState(string, []byte) (*os.File, error) { return nil, errNoStore }

// ReadState is only supported on Linux.
func ReadState(*os.File, int64) ([]byte, error) { return nil, errNoStore }
