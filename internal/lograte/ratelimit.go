package lograte

import (
	"sync"
	"time"
)

// Every lets a repeated event be logged at most once per interval, telling
// how many times it happened in between, so that a flood of drops or bad
// peers cannot flood the log.
type Every struct {
	mu         sync.Mutex
	interval   time.Duration
	last       time.Time
	suppressed int
}

// NewEvery allows one event per interval.
func NewEvery(interval time.Duration) *Every { return &Every{interval: interval} }

// Allow reports whether to log now and how many events were not logged since
// the last time it said yes.
func (e *Every) Allow() (ok bool, suppressed int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	now := time.Now()
	if !e.last.IsZero() && now.Sub(e.last) < e.interval {
		e.suppressed++
		return false, 0
	}
	e.last = now
	suppressed, e.suppressed = e.suppressed, 0
	return true, suppressed
}
