//go:build !linux

package guestrelay

import (
	"errors"
	"syscall"
	"time"
)

type batchReader struct{}

func newBatchReader(syscall.Conn, int) (*batchReader, error) {
	return nil, errors.New("recvmmsg is Linux only")
}

func (r *batchReader) read(func([][]byte)) error { return nil }

func (r *batchReader) cutoff(time.Time) bool { return false }

func (r *batchReader) dropped() uint64 { return 0 }
