package sink

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/katatrace/katatrace/guestid"
)

// recordingBackend takes every request and remembers it, and when.
type recordingBackend struct {
	mu    sync.Mutex
	sent  [][]byte
	times []time.Time
}

func (r *recordingBackend) encode(p []byte, _ guestid.ID) ([]byte, int, error) {
	return bytes.Clone(p), 1, nil
}

func (r *recordingBackend) send(_ context.Context, body []byte) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.sent = append(r.sent, bytes.Clone(body))
	r.times = append(r.times, time.Now())
	return nil
}

func (r *recordingBackend) reset() {}
func (r *recordingBackend) close() {}

func (r *recordingBackend) requests() ([][]byte, []time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.sent, r.times
}

// TestWorkersLingerForAFullerRequest (virtual time): batches queued one
// by one, as a Kata agent's spans come, go as one request once a worker
// has waited for more, however many workers are idle; a flush does not
// wait for the linger; a request's worth goes at once.
func TestWorkersLingerForAFullerRequest(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	from := guestid.Named("unix:///run/vc/vm/a/clh.sock_10240")
	t.Run("spans one by one", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			r := &recordingBackend{}
			c := newCollectorSink("test", r, 1<<30, 16, log)
			defer c.Close(context.Background())
			start := time.Now()
			for range 100 {
				if err := c.Send([]byte("span"), from); err != nil {
					t.Fatal(err)
				}
				time.Sleep(10 * time.Microsecond)
			}
			synctest.Wait()
			if sent, _ := r.requests(); len(sent) != 0 {
				t.Fatalf("%d requests before the linger ended", len(sent))
			}
			time.Sleep(defaultLinger)
			synctest.Wait()
			sent, at := r.requests()
			if len(sent) != 1 || len(sent[0]) != 400 {
				t.Fatalf("%d requests (first of %d bytes), want one of all 100 spans", len(sent), len(sent[0]))
			}
			if d := at[0].Sub(start); d > defaultLinger+time.Millisecond {
				t.Fatalf("sent %v after the first span", d)
			}
		})
	})
	t.Run("a flush does not wait", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			r := &recordingBackend{}
			c := newCollectorSink("test", r, 1<<30, 16, log)
			defer c.Close(context.Background())
			start := time.Now()
			if err := c.Send([]byte("span"), from); err != nil {
				t.Fatal(err)
			}
			if _, _, err := c.FlushGuest(context.Background(), from.Guest); err != nil {
				t.Fatal(err)
			}
			if sent, at := r.requests(); len(sent) != 1 || at[0] != start {
				t.Fatalf("%d requests, the first after %v: a flush waited for the linger", len(sent), at[0].Sub(start))
			}
		})
	})
	t.Run("a full request goes at once", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			r := &recordingBackend{}
			c := newCollectorSink("test", r, 1<<30, 2, log)
			defer c.Close(context.Background())
			start := time.Now()
			big := bytes.Repeat([]byte("x"), lingerFill)
			if err := c.Send(big, from); err != nil {
				t.Fatal(err)
			}
			synctest.Wait()
			if sent, at := r.requests(); len(sent) != 1 || at[0] != start {
				t.Fatalf("%d requests: a full one waited", len(sent))
			}
		})
	})
}
