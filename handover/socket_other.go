//go:build !linux

package handover

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"time"
)

var errNotLinux = errors.New("the handover socket is only supported on Linux")

func dupFile(int, string) (*os.File, error) { return nil, errNotLinux }

// Offer is only supported on Linux.
type Offer struct{}

// NewOffer is only supported on Linux.
func NewOffer(string, string, *slog.Logger, func() error) (*Offer, error) { return nil, errNotLinux }

// Give is only supported on Linux.
func (*Offer) Give(context.Context, *Store, func(), time.Duration) error { return errNotLinux }

// ErrNoSuccessor is Give's when no successor asked again.
var ErrNoSuccessor = errors.New("no successor asked again")

// Publish is only supported on Linux.
func (*Offer) Publish() error { return errNotLinux }

// MaxPath is the longest path an offer binds.
const MaxPath = 90

// Close does nothing.
func (*Offer) Close() error { return nil }

// Taken is only supported on Linux.
type Taken struct {
	Files map[string]*os.File
	PID   int
}

// Commit is only supported on Linux.
func (*Taken) Commit() error { return errNotLinux }

// Abandon does nothing.
func (*Taken) Abandon() {}

// Take is only supported on Linux.
func Take(context.Context, string, string) (*Taken, error) { return nil, errNotLinux }
