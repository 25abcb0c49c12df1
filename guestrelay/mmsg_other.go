//go:build !linux

package guestrelay

import (
	"errors"
	"net"
)

type batchReader struct{}

func newBatchReader(*net.UDPConn, int) (*batchReader, error) {
	return nil, errors.New("recvmmsg is Linux only")
}

func (r *batchReader) read(func([][]byte)) error { return nil }

func (r *batchReader) dropped() uint64 { return 0 }
