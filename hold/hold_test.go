package hold

import (
	"bytes"
	"errors"
	"io"
	"os"
	"testing"
	"time"
)

// granted reports whether ch gave room within a moment.
func granted(t *testing.T, ch <-chan []byte) bool {
	t.Helper()
	select {
	case <-ch:
		return true
	case <-time.After(50 * time.Millisecond):
		return false
	}
}

// get asks for room in the background.
func get(s *Share, n int, cancel <-chan struct{}) <-chan []byte {
	ch := make(chan []byte, 1)
	go func() {
		b, err := s.Get(n, cancel)
		if err == nil {
			ch <- b
		}
	}()
	return ch
}

func TestNewChecksItsBounds(t *testing.T) {
	for _, tc := range []struct {
		total, per int
		ok         bool
	}{
		{Chunk, Chunk, true},
		{4 * Chunk, 2 * Chunk, true},
		{Chunk, Chunk - 1, false},
		{Chunk, 2 * Chunk, false},
	} {
		if _, err := New(tc.total, tc.per); (err == nil) != tc.ok {
			t.Errorf("New(%d, %d): %v", tc.total, tc.per, err)
		}
	}
}

// TestRoomIsBoundedAndWaitsInOrder: room beyond the total or a guest's
// share waits; room given back goes to the first waiting, except that one
// waiting for its own guest's share does not hold up another guest.
func TestRoomIsBoundedAndWaitsInOrder(t *testing.T) {
	l, err := New(3*Chunk, 2*Chunk)
	if err != nil {
		t.Fatal(err)
	}
	a, b, c := l.Share(), l.Share(), l.Share()
	a1, _ := a.Get(10, nil)
	a2, _ := a.Get(Chunk, nil)
	if len(a1) < 10 || cap(a2) != Chunk {
		t.Fatalf("room of %d and %d bytes", len(a1), cap(a2))
	}
	a3 := get(a, 1, nil) // over a's share
	if granted(t, a3) {
		t.Fatal("a guest was given more than its share")
	}
	b1, _ := b.Get(1, nil) // the total's last chunk: a3 waits for its share only
	c1 := get(c, 1, nil)   // over the total
	if granted(t, c1) {
		t.Fatal("room beyond the total was given")
	}
	if st := l.Stats(); st.Held != 3*Chunk || st.Waiting != 2 || st.Waits != 2 {
		t.Fatalf("stats %+v", st)
	}
	b.Put(b1) // the total has a chunk: c1 first in line for it? a3 still over a's share
	if !granted(t, c1) {
		t.Fatal("room given back did not go to the guest waiting for the total")
	}
	if granted(t, a3) {
		t.Fatal("room went past a guest's share")
	}
	a.Put(a2)
	if !granted(t, a3) {
		t.Fatal("room given back within a guest's share did not go to it")
	}
	if st := l.Stats(); st.Held != 3*Chunk || st.Peak != 3*Chunk || st.Waiting != 0 {
		t.Fatalf("stats %+v", st)
	}
}

func TestLargeRoomAndCancel(t *testing.T) {
	l, _ := New(8<<20, 6<<20)
	s := l.Share()
	big, err := s.Get(4<<20+8, nil)
	if err != nil || len(big) < 4<<20+8 || s.Held() != int64(Size(4<<20+8)) {
		t.Fatalf("room %d, held %d: %v", len(big), s.Held(), err)
	}
	if _, err := s.Get(7<<20, nil); err == nil {
		t.Fatal("room beyond a guest's whole share was promised")
	}
	cancel := make(chan struct{})
	done := make(chan error, 1)
	go func() { _, err := s.Get(4<<20, cancel); done <- err }()
	time.Sleep(20 * time.Millisecond)
	close(cancel)
	if err := <-done; !errors.Is(err, errCanceled) || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("a canceled wait ended with %v", err)
	}
	s.Put(big)
	if st := l.Stats(); st.Held != 0 || st.Waiting != 0 {
		t.Fatalf("after all was given back: %+v", st)
	}
}

// slowReader returns its bytes a few at a time.
type slowReader struct {
	b []byte
	n int
}

func (r *slowReader) Read(p []byte) (int, error) {
	if len(r.b) == 0 {
		return 0, io.EOF
	}
	n := copy(p, r.b[:min(len(r.b), r.n)])
	r.b = r.b[n:]
	return n, nil
}

// TestReaderHoldsRoomOnlyForWhatNeedsIt: a reader peeks within its own
// buffer without room, takes room for more, and gives it back once it is
// caught up.
func TestReaderHoldsRoomOnlyForWhatNeedsIt(t *testing.T) {
	l, _ := New(4*Chunk, 2*Chunk)
	s := l.Share()
	data := bytes.Repeat([]byte("0123456789"), 10000) // 100,000 bytes
	r := NewReader(&slowReader{b: data, n: 3000}, 1024, s, nil, []byte("pre"))
	if b, err := r.Peek(3); err != nil || string(b) != "pre" || s.Held() != 0 {
		t.Fatalf("peek %q, held %d: %v", b, s.Held(), err)
	}
	_, _ = r.Discard(3)
	if b, err := r.Peek(1000); err != nil || !bytes.Equal(b, data[:1000]) || s.Held() != 0 {
		t.Fatalf("within its own buffer: held %d: %v", s.Held(), err)
	}
	granted := 0
	r.OnRoom = func() { granted++ }
	b, err := r.Peek(50000)
	if err != nil || !bytes.Equal(b, data[:50000]) || s.Held() != Chunk || granted != 1 {
		t.Fatalf("a large peek: held %d, granted %d: %v", s.Held(), granted, err)
	}
	_, _ = r.Discard(50000)
	b, err = r.Peek(50000)
	if err != nil || !bytes.Equal(b, data[50000:]) {
		t.Fatalf("the rest: %v", err)
	}
	_, _ = r.Discard(50000)
	if _, err := r.Peek(1); err != io.EOF || s.Held() != 0 {
		t.Fatalf("caught up at the end: held %d: %v", s.Held(), err)
	}
	r.Close()
	if l.Stats().Held != 0 {
		t.Fatal("room left held")
	}
}
