//go:build !linux

package handover

import (
	"context"
	"errors"
	"log/slog"
	"os"
)

var errNotLinux = errors.New("the handover socket is only supported on Linux")

func dupFile(int, string) (*os.File, error) { return nil, errNotLinux }

// Offer is only supported on Linux.
type Offer struct{}

// NewOffer is only supported on Linux.
func NewOffer(string, string, *slog.Logger, func()) (*Offer, error) { return nil, errNotLinux }

// Give is only supported on Linux.
func (*Offer) Give(context.Context, *Store) error { return errNotLinux }

// Close does nothing.
func (*Offer) Close() error { return nil }

// Take is only supported on Linux.
func Take(context.Context, string, string) (map[string]*os.File, int, error) {
	return nil, 0, errNotLinux
}
