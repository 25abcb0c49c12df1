package kataspan

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Reader reads a Kata agent's span stream frame by frame, and never gives
// up on it. The agent keeps one connection for its life (Kata's
// vsock-exporter lets it go only on NotConnected, which a peer's close
// never gives), so what cannot be returned is skipped and counted, never
// a reason to end the stream:
//   - a frame announcing more than the limit is read through and thrown
//     away without being held (oversize);
//   - a frame given up half-way (Drop: it stalled) is skipped as the rest
//     of it comes (stalled);
//   - where the framing is lost (a length no span could have, a stream
//     taken up after a crash in the middle of a frame), the reader finds
//     the next frame: a length within the limit followed by a payload that
//     decodes, a bincode one checked field by field as it arrives so that
//     a false length is not waited on (resync).
//
// A payload that is framed but does not decode is returned: the caller
// skips it.
type Reader struct {
	r     io.Reader
	max   int
	buf   []byte // buf[start:end] was read and is not yet returned or skipped
	start int
	end   int
	off   int64 // the stream's offset of buf[0]
	err   error // a read's error that came with bytes, for the next read
	skip  int64 // bytes of the current frame still to skip
	lost  bool  // the framing is lost: find the next frame
	stats Skipped
	// wait is what Next waits for the rest of, begun at stream offset
	// waitAt; onWait is told as each wait begins (OnWait).
	wait   wait
	waitAt int64
	onWait func()
	// mem gives buffers beyond initialBuffer (held: buf is one).
	mem  Memory
	held bool
}

// Memory gives a Reader room for a frame larger than its own buffer, and
// takes it back: a host bounds what its guests make it hold this way.
// Get may wait for room (the frame's bytes stay unread meanwhile); its
// error ends Next's call, which may be made again.
type Memory interface {
	Get(n int) ([]byte, error)
	Put(b []byte)
}

// SetMemory has the reader take room for frames larger than its own
// buffer from m (by default, the heap's).
func (r *Reader) SetMemory(m Memory) { r.mem = m }

// room makes the buffer hold want bytes from r.start, taking room for
// them from the reader's Memory before any of them is read.
func (r *Reader) room(want int) error {
	if want <= cap(r.buf) || want <= initialBuffer || r.mem == nil {
		return nil // fill makes it
	}
	if have := r.end - r.start; r.held {
		// Room held is given back before more is waited for, so that a
		// guest's connections cannot hold its share while each waits
		// for more of it. Reads into room stop at its frame's end, so
		// what is left is mostly a header; while the framing is lost it
		// may be up to a frame, copied to the heap for the wait.
		buf := make([]byte, max(have, initialBuffer))
		copy(buf, r.buf[r.start:r.end])
		r.free()
		r.off += int64(r.start)
		r.buf, r.start, r.end = buf, 0, have
	}
	buf, err := r.mem.Get(want)
	if err != nil {
		return err
	}
	have := copy(buf, r.buf[r.start:r.end])
	r.free()
	r.off += int64(r.start)
	r.buf, r.start, r.end, r.held = buf, 0, have, true
	return nil
}

// free gives back the room the buffer is, if it is.
func (r *Reader) free() {
	if r.held {
		r.mem.Put(r.buf)
		r.held = false
	}
}

// Close gives back the room the reader holds; it reads nothing after.
func (r *Reader) Close() {
	r.free()
	r.buf, r.start, r.end = nil, 0, 0
}

// wait is what Next waits for the rest of: what Drop gives up.
type wait uint8

const (
	noWait        wait = iota
	waitPayload        // a frame's, its header read, within the limit
	waitCandidate      // what may be the next frame, the framing lost
	waitPrefix         // an oversize frame's first bytes: a span's?
)

// Skipped counts what a Reader did not return.
type Skipped struct {
	// Oversize frames were above the limit; Stalled ones were dropped
	// half-way (Drop).
	Oversize, Stalled uint64
	// Resyncs counts the times the framing was lost and looked for.
	Resyncs uint64
	// Bytes counts every byte skipped, headers included.
	Bytes uint64
}

const (
	// initialBuffer is a reader's buffer to begin with (an agent's span
	// takes a few KiB); it grows for a larger frame, and goes back to this
	// once that frame is done, so that a connection does not keep the
	// memory of its largest span.
	initialBuffer = 16 << 10
	// plausibleFactor: a length this many times the limit is taken as the
	// framing lost, never read through.
	plausibleFactor = 64
	// prefixCheck is how much of an oversize frame's payload is checked
	// to be a span's beginning before it is read through.
	prefixCheck = 256
)

// NewReader reads frames of at most max payload bytes from r.
func NewReader(r io.Reader, max int) *Reader {
	return &Reader{r: r, max: max}
}

// Skipped returns what the reader has skipped so far.
func (r *Reader) Skipped() Skipped { return r.stats }

// OnWait has fn told each time Next begins to wait for the rest of a
// frame it has begun (its header read, within the limit), for the rest of
// what may be the next frame while the framing is lost, or for an
// oversize frame's first bytes: a caller's frame timeout starts then, and
// Drop gives that up. A header not yet whole is no wait: it holds a few
// bytes.
func (r *Reader) OnWait(fn func()) { r.onWait = fn }

// awaiting notes that Next waits for the rest of w at r.start, telling
// onWait when that is a new wait.
func (r *Reader) awaiting(w wait) {
	if at := r.off + int64(r.start); r.wait != w || r.waitAt != at {
		r.wait, r.waitAt = w, at
		if r.onWait != nil {
			r.onWait()
		}
	}
}

// Lose makes the reader find the next frame before it returns one: the
// stream is taken up somewhere unknown (after a crash of the process that
// read it before).
func (r *Reader) Lose() {
	if !r.lost {
		r.lost = true
		r.stats.Resyncs++
	}
}

// Next returns the next frame's payload, valid until the next call. Its
// errors are the stream's: io.EOF at a frame's end, io.ErrUnexpectedEOF
// inside one (the part is lost), or a read's error (a deadline), after
// which Next may be called again and goes on where it was.
func (r *Reader) Next() ([]byte, error) {
	for {
		if r.skip > 0 {
			n := min(r.skip, int64(r.end-r.start))
			r.start += int(n)
			r.skip -= n
			r.stats.Bytes += uint64(n)
			if r.skip > 0 {
				if err := r.fill(0); err != nil {
					return nil, err
				}
				continue
			}
		}
		if r.lost {
			want, found := r.find()
			if !found {
				if want > HeaderSize {
					if err := r.room(want); err != nil {
						return nil, err
					}
					r.awaiting(waitCandidate)
				}
				if err := r.fill(want); err != nil {
					return nil, err
				}
				continue
			}
			r.lost = false
		}
		if r.end-r.start < HeaderSize {
			if err := r.fill(HeaderSize); err != nil {
				return nil, err
			}
			continue
		}
		n := binary.BigEndian.Uint64(r.buf[r.start:])
		switch {
		case n <= uint64(r.max):
			end := r.start + HeaderSize + int(n)
			if end > r.end {
				// Room first: a frame that does not fit waits unread, and
				// its wait (its frame timeout) begins once it may be read.
				if err := r.room(HeaderSize + int(n)); err != nil {
					return nil, err
				}
				r.awaiting(waitPayload)
				if err := r.fill(HeaderSize + int(n)); err != nil {
					return nil, err
				}
				continue
			}
			p := r.buf[r.start+HeaderSize : end]
			r.start, r.wait = end, noWait
			return p, nil
		case n/plausibleFactor > uint64(r.max):
			r.Lose()
		default:
			if have, want := r.end-r.start-HeaderSize, min(prefixCheck, int(n)); have < want {
				r.awaiting(waitPrefix)
				if err := r.fill(HeaderSize + want); err != nil {
					return nil, err
				}
				continue
			}
			if !spanPrefix(r.buf[r.start+HeaderSize:r.end], int(n)) {
				r.Lose()
				continue
			}
			r.stats.Oversize++
			r.skip = HeaderSize + int64(n)
		}
	}
}

// InFrame reports whether Next waits for the rest of something Drop
// would give up (see OnWait).
func (r *Reader) InFrame() bool { return r.wait != noWait }

// Drop gives up what Next waits for the rest of (see OnWait): a frame
// begun is let go, its memory with it, and its rest skipped as it comes
// (stalled); what might have been the next frame while the framing is
// lost is taken as none, and the search goes on after its first byte; an
// oversize frame whose first bytes never came is taken as the framing
// lost. It reports whether there was such a wait.
func (r *Reader) Drop() bool {
	switch r.wait {
	case waitPayload:
		n := binary.BigEndian.Uint64(r.buf[r.start:])
		r.stats.Stalled++
		r.skip = HeaderSize + int64(n)
		r.stats.Bytes += uint64(r.end - r.start)
		r.skip -= int64(r.end - r.start)
		r.off += int64(r.end)
		r.start, r.end = 0, 0
		r.free()
		r.buf = nil
	case waitCandidate:
		r.start++
		r.stats.Bytes++
	case waitPrefix:
		r.Lose()
	default:
		return false
	}
	r.wait = noWait
	return true
}

// find looks for the next frame in what was read: a length within the
// limit, followed by a payload that decodes, which it leaves at r.start.
// Bytes before it are skipped. When what was read does not yet settle it,
// it returns how many bytes from r.start it needs.
func (r *Reader) find() (want int, found bool) {
	for r.end-r.start >= HeaderSize {
		n := binary.BigEndian.Uint64(r.buf[r.start:])
		if n > 0 && n <= uint64(r.max) {
			p := r.buf[r.start+HeaderSize : min(r.end, r.start+HeaderSize+int(n))]
			switch candidate(p, int(n)) {
			case whole:
				return 0, true
			case partial:
				return HeaderSize + int(n), false
			}
		}
		r.start++
		r.stats.Bytes++
	}
	return HeaderSize, false
}

type verdict int

const (
	notSpan verdict = iota
	partial         // a span's beginning so far: more is needed
	whole
)

// candidate judges p, the first bytes of a payload of n bytes.
func candidate(p []byte, n int) verdict {
	if len(p) == n {
		if _, err := Decode(p); err == nil {
			return whole
		}
		return notSpan
	}
	if spanPrefix(p, n) {
		return partial
	}
	return notSpan
}

// spanPrefix reports whether p, the first bytes of a payload of n, can
// begin a span of n bytes: JSON's opening, or bincode's fields so far.
func spanPrefix(p []byte, n int) bool {
	if looksJSON(p) {
		return true
	}
	err := bincodePrefix(p, n)
	return err == nil || errors.Is(err, errMore)
}

// fill reads once more into the buffer, making room for want bytes from
// r.start (at most the largest frame).
func (r *Reader) fill(want int) error {
	if r.err != nil {
		err := r.err
		r.err = nil
		return r.eof(err)
	}
	have := r.end - r.start
	if have == 0 && cap(r.buf) > initialBuffer {
		r.off += int64(r.start)
		r.free()
		r.buf, r.start, r.end = nil, 0, 0 // the large frame is done with: let its memory go
	}
	size := max(want, initialBuffer)
	if cap(r.buf) < size {
		buf := make([]byte, size)
		copy(buf, r.buf[r.start:r.end])
		r.free()
		r.off += int64(r.start)
		r.buf, r.start, r.end = buf, 0, have
	} else if r.start > 0 && (have == 0 || r.end == len(r.buf) || r.start+want > len(r.buf)) {
		copy(r.buf, r.buf[r.start:r.end])
		r.off += int64(r.start)
		r.start, r.end = 0, have
	}
	if len(r.buf) < cap(r.buf) {
		r.buf = r.buf[:cap(r.buf)]
	}
	to := len(r.buf)
	if r.held && r.start+want > r.end {
		to = r.start + want // room is for its frame: nothing after it is read into it
	}
	n, err := r.r.Read(r.buf[r.end:to])
	r.end += n
	if n > 0 {
		r.err = err
		return nil
	}
	if err == nil {
		err = io.ErrNoProgress
	}
	return r.eof(err)
}

// eof turns the end of the stream inside a frame into ErrUnexpectedEOF,
// counting what was read of the frame as skipped.
func (r *Reader) eof(err error) error {
	if err == io.EOF && (r.end > r.start || r.skip > 0) {
		r.stats.Bytes += uint64(r.end - r.start)
		r.off += int64(r.end)
		r.start, r.end, r.skip = 0, 0, 0
		return io.ErrUnexpectedEOF
	}
	return err
}

// State is what a successor needs to take the stream up where this reader
// is: whether it is skipping or looking for a frame, and the bytes read
// and not yet returned.
func (r *Reader) State() []byte {
	var flags byte
	if r.lost {
		flags = 1
	}
	b := append([]byte{stateVersion, flags}, binary.BigEndian.AppendUint64(nil, uint64(r.skip))...)
	return append(b, r.buf[r.start:r.end]...)
}

const stateVersion = 1

// Restore takes the stream up where a predecessor's reader left it
// (State).
func (r *Reader) Restore(state []byte) error {
	if len(state) < 10 || state[0] != stateVersion || state[1] > 1 {
		return fmt.Errorf("span stream state of %d bytes: not one this version wrote", len(state))
	}
	skip := binary.BigEndian.Uint64(state[2:])
	rest := state[10:]
	// A predecessor holds at most its buffer: 16 KiB, or a frame within
	// its limit, which may be larger than this reader's.
	if skip > 1<<62 || len(rest) > max(initialBuffer, HeaderSize+plausibleFactor*r.max) {
		return fmt.Errorf("span stream state: skip %d and %d bytes held are beyond any frame", skip, len(rest))
	}
	r.lost, r.skip = state[1] == 1, int64(skip)
	// From the heap: a predecessor held it within the same bounds, and a
	// wait here would hold up the adoption.
	r.free()
	r.buf = make([]byte, max(len(rest), initialBuffer))
	r.start, r.end = 0, copy(r.buf, rest)
	return nil
}
