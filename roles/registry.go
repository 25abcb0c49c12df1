package roles

import (
	"context"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync/atomic"
)

// Command is a role's parsed flags; Run does the role's work.
type Command interface {
	Run(rc *RunContext) error
}

// RunContext is what a role runs with.
type RunContext struct {
	// Ctx is cancelled by SIGTERM or SIGINT: the role then drains and stops.
	Ctx    context.Context
	Log    *slog.Logger
	Stdout io.Writer
	Stderr io.Writer
	// Version is the binary's, for the start line and `version`; Role is
	// the role's name.
	Version, Role string
	reload        *atomic.Pointer[func() []any]
}

// OnReload sets what SIGHUP does, in systemd's sense (ExecReload): fn
// re-reads what can be re-read (re-scans watched patterns, reopens sinks)
// and returns what it did, for the log line. The role serves on either
// way; one that sets nothing logs the SIGHUP and serves on.
func (rc *RunContext) OnReload(fn func() []any) {
	if rc.reload != nil {
		rc.reload.Store(&fn)
	}
}

// Role is one entry of the registry.
type Role struct {
	Name string
	Help string
	// New returns the role's flags with their zero values; kong fills them.
	New func() Command
}

var registry []Role

// register adds a role; each role file calls it from init.
// A name registered twice is a programming error: it panics at start-up.
func register(r Role) {
	i, found := slices.BinarySearchFunc(registry, r.Name, func(e Role, name string) int { return strings.Compare(e.Name, name) })
	if found {
		panic("roles: role " + r.Name + " registered twice")
	}
	registry = slices.Insert(registry, i, r)
}

// Lookup finds a role by name.
func Lookup(name string) (Role, bool) {
	i := slices.IndexFunc(registry, func(r Role) bool { return r.Name == name })
	if i < 0 {
		return Role{}, false
	}
	return registry[i], true
}

// All lists the roles by name.
func All() []Role { return slices.Clone(registry) }
