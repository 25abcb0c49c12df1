package hold

import (
	"fmt"
	"io"
)

// Reader is a buffered reader of a guest's stream, as bufio.Reader is, whose
// buffer is its own small one until a frame needs more: then it is room
// from the guest's Share (Peek waits for it), given back once everything
// buffered was taken. An idle connection holds only its own buffer. It is
// for frames of at most a Chunk: one held never waits for more room, so
// that a guest's connections cannot hold its share while each waits for
// more of it.
type Reader struct {
	r      io.Reader
	share  *Share
	cancel <-chan struct{}
	own    []byte
	buf    []byte // own, or room from share (held)
	held   bool
	start  int
	end    int
	err    error // a read's error that came with bytes, for the next read
	// BeforeRoom, if set, is called before room is asked for (the ask
	// may wait); OnRoom once it was granted, before the frame's bytes are
	// read: its reading begins only now. OnBegin is called when a read
	// brings bytes to an empty buffer: a frame (or message) begins.
	BeforeRoom, OnRoom, OnBegin func()
}

// NewReader reads r with a buffer of its own of size own (from the heap),
// and room from share beyond it, whose waits end when cancel is closed;
// rest is what was read of r already.
func NewReader(r io.Reader, own int, share *Share, cancel <-chan struct{}, rest []byte) *Reader {
	b := &Reader{r: r, share: share, cancel: cancel, own: make([]byte, max(own, len(rest)))}
	b.buf = b.own
	b.end = copy(b.buf, rest)
	return b
}

// Buffered is how many bytes can be peeked without reading.
func (b *Reader) Buffered() int { return b.end - b.start }

// Peek returns the next n bytes without taking them, reading (and, for
// more than the buffer holds, waiting for room) until they are there or
// a read fails: then it returns what there is, and the error. The bytes
// are valid until the next Peek that reads.
func (b *Reader) Peek(n int) ([]byte, error) {
	for b.end-b.start < n {
		if err := b.fill(n); err != nil {
			return b.buf[b.start:b.end], err
		}
	}
	return b.buf[b.start : b.start+n], nil
}

// Discard takes the next n buffered bytes.
func (b *Reader) Discard(n int) (int, error) {
	n = min(n, b.end-b.start)
	b.start += n
	return n, nil
}

// fill reads once, with room for want bytes from b.start.
func (b *Reader) fill(want int) error {
	if b.err != nil {
		err := b.err
		b.err = nil
		return err
	}
	have := b.end - b.start
	if have == 0 && b.held {
		b.Close() // caught up: an idle stream holds only its own buffer
	}
	switch {
	case want > len(b.buf) && b.held:
		return fmt.Errorf("a frame of %d bytes is beyond a reader's room (%d)", want, len(b.buf))
	case want > len(b.buf):
		if b.BeforeRoom != nil {
			b.BeforeRoom()
		}
		room, err := b.share.Get(want, b.cancel)
		if err != nil {
			return err
		}
		b.swap(room)
		if b.OnRoom != nil {
			b.OnRoom()
		}
	case b.start > 0 && b.start+want > len(b.buf) || have == 0:
		copy(b.buf, b.buf[b.start:b.end])
		b.start, b.end = 0, have
	}
	n, err := b.r.Read(b.buf[b.end:])
	b.end += n
	if n > 0 && have == 0 && b.OnBegin != nil {
		b.OnBegin()
	}
	if n > 0 {
		b.err = err
		return nil
	}
	if err == nil {
		err = io.ErrNoProgress
	}
	return err
}

// swap moves what is buffered into room from the share, giving back room
// held before.
func (b *Reader) swap(room []byte) {
	old, held := b.buf, b.held
	b.end = copy(room, b.buf[b.start:b.end])
	b.start, b.buf, b.held = 0, room, true
	if held {
		b.share.Put(old)
	}
}

// Close gives back the room the reader holds, keeping of what is
// buffered only what its own buffer has room for: call it with nothing
// buffered, or with what is buffered taken elsewhere (a handover's copy).
func (b *Reader) Close() {
	if !b.held {
		return
	}
	room := b.buf
	b.end = copy(b.own, b.buf[b.start:b.end])
	b.start, b.buf, b.held = 0, b.own, false
	b.share.Put(room)
}
