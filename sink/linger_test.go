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

// blockingBackend holds every request until released, counting those in
// flight at once.
type blockingBackend struct {
	recordingBackend
	release  chan struct{}
	mu2      sync.Mutex
	cur, max int
}

func (b *blockingBackend) send(ctx context.Context, body []byte) error {
	b.mu2.Lock()
	b.cur++
	b.max = max(b.max, b.cur)
	b.mu2.Unlock()
	<-b.release
	b.mu2.Lock()
	b.cur--
	b.mu2.Unlock()
	return b.recordingBackend.send(ctx, body)
}

// TestLingeringWorkersStay (virtual time): workers that lingered while
// another took the queue go back to waiting, not away: after spans
// trickled in, as many requests go at once as there are workers.
func TestLingeringWorkersStay(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const workers = 4
		b := &blockingBackend{release: make(chan struct{})}
		c := newCollectorSink("test", b, 1<<30, workers, slog.New(slog.DiscardHandler))
		from := guestid.Named("g")
		close(b.release) // the trickle's requests pass
		for range 10 {
			for range workers {
				if err := c.Send([]byte("span"), from); err != nil {
					t.Fatal(err)
				}
			}
			time.Sleep(time.Millisecond)
		}
		time.Sleep(time.Second)
		synctest.Wait()
		b.release = make(chan struct{})
		// Requests of their own (each over half of maxRequest, past the
		// linger): one a worker, all at once.
		for range 2 * workers {
			if err := c.Send(bytes.Repeat([]byte("x"), maxRequest/2+1), from); err != nil {
				t.Fatal(err)
			}
		}
		synctest.Wait()
		b.mu2.Lock()
		cur := b.cur
		b.mu2.Unlock()
		close(b.release)
		if cur != workers {
			t.Fatalf("%d requests in flight at once, want %d (workers left)", cur, workers)
		}
		if err := c.Close(context.Background()); err != nil {
			t.Fatal(err)
		}
	})
}

// TestFlushAnsweredWhenItsBatchIsDropped: a guest's flush waiting while
// the endpoint is stuck is answered as soon as the queue drops the
// guest's last batch (another guest's pushed it out), not at its
// deadline.
func TestFlushAnsweredWhenItsBatchIsDropped(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := &blockingBackend{release: make(chan struct{})}
		c := newCollectorSink("test", b, 1000, 1, slog.New(slog.DiscardHandler))
		c.mu.Lock()
		c.linger = 0 // the worker takes other's first batch at once
		c.mu.Unlock()
		a, other := guestid.Named("a"), guestid.Named("b")
		// The one worker is busy with other's first batch.
		if err := c.Send(bytes.Repeat([]byte("o"), 600), other); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		if err := c.Send(bytes.Repeat([]byte("a"), 600), a); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		done := make(chan time.Duration)
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			_, lost, _ := c.FlushGuest(ctx, a.Guest)
			if lost != 1 {
				t.Errorf("a lost %d batches, want 1", lost)
			}
			done <- time.Since(start)
		}()
		synctest.Wait()
		if err := c.Send(bytes.Repeat([]byte("o"), 600), other); err != nil { // pushes a's out
			t.Fatal(err)
		}
		if d := <-done; d != 0 {
			t.Fatalf("the flush was answered after %v, want at once", d)
		}
		close(b.release)
		_ = c.Close(context.Background())
	})
}
