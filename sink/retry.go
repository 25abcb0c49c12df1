package sink

import (
	"errors"
	"math/rand/v2"
	"net/http"
	"strconv"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/status"
)

// retryPolicy is how a collector sink retries a batch, as the
// OpenTelemetry Collector's exporter helper does: exponential backoff with
// jitter (so that many hosts recovering together do not retry in step), a
// server's own word on when to come back (HTTP Retry-After, gRPC
// RetryInfo) raising the wait, never lowering it (a server that says "in
// 1 s" to every attempt must not undo the backoff), and a limit on the
// time spent on one batch, after which it is dropped and counted.
type retryPolicy struct {
	Initial, Max time.Duration
	Multiplier   float64
	// Jitter spreads each wait over ±Jitter of it.
	Jitter float64
	// MaxElapsed bounds the time from a batch's first attempt to its last.
	MaxElapsed time.Duration
}

// defaultRetry starts sooner than the Collector's 5 s, since a host's
// collector is usually close and a guest may be waiting on a flush.
var defaultRetry = retryPolicy{Initial: 100 * time.Millisecond, Max: 30 * time.Second, Multiplier: 1.5, Jitter: 0.5, MaxElapsed: 5 * time.Minute}

// retry is one batch's retrying.
type retry struct {
	p        retryPolicy
	start    time.Time
	interval time.Duration
}

func (p retryPolicy) begin(now time.Time) *retry {
	return &retry{p: p, start: now, interval: p.Initial}
}

// next says how long to wait after err before the next attempt, or false
// when the batch has had its time.
func (r *retry) next(err error, now time.Time) (time.Duration, bool) {
	wait := time.Duration(float64(r.interval) * (1 + r.p.Jitter*(2*rand.Float64()-1)))
	r.interval = min(time.Duration(float64(r.interval)*r.p.Multiplier), r.p.Max)
	if d, ok := throttleOf(err); ok {
		wait = max(wait, d)
	}
	if now.Add(wait).Sub(r.start) > r.p.MaxElapsed {
		return 0, false
	}
	return wait, true
}

// throttled is a retryable error whose server said when to come back.
type throttled struct {
	err   error
	after time.Duration
}

func (t *throttled) Error() string { return t.err.Error() + " (retry after " + t.after.String() + ")" }
func (t *throttled) Unwrap() error { return t.err }

// throttleOf is the wait a server asked for in err, if it asked.
func throttleOf(err error) (time.Duration, bool) {
	var t *throttled
	if errors.As(err, &t) && t.after > 0 {
		return t.after, true
	}
	if st, ok := status.FromError(err); ok {
		for _, d := range st.Details() {
			if ri, ok := d.(*errdetails.RetryInfo); ok && ri.GetRetryDelay() != nil {
				if after := ri.GetRetryDelay().AsDuration(); after > 0 {
					return after, true
				}
			}
		}
	}
	return 0, false
}

// retryAfter reads an HTTP Retry-After header: seconds, or a date.
func retryAfter(h http.Header, now time.Time) time.Duration {
	v := h.Get("Retry-After")
	if v == "" {
		return 0
	}
	if s, err := strconv.Atoi(v); err == nil && s >= 0 {
		return time.Duration(s) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(t.Sub(now), 0)
	}
	return 0
}
