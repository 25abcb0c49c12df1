package jaegerthrift

import (
	"bytes"
	"errors"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/katatrace/katatrace/internal/lograte"
	"github.com/katatrace/katatrace/wire"
)

// The start of every message a Jaeger client sends: Thrift compact protocol
// id, version 1 with message type CALL (jaeger-client-go 2.x) or ONEWAY
// (older clients), then a varint sequence id and the method name.
const (
	compactProtocolID = 0x82
	compactCall       = 0x21 // version 1 | CALL<<5
	compactOneway     = 0x81 // version 1 | ONEWAY<<5
	emitBatch         = "emitBatch"
)

var (
	errIncomplete = errors.New("incomplete")
	errInvalid    = errors.New("not a Thrift compact emitBatch message")
)

// maxDepth bounds struct and container nesting; Jaeger's batches nest four
// deep.
const maxDepth = 32

// ScanEmitBatch measures the emitBatch message at the start of b by walking
// its Thrift compact encoding. It returns the message length; errIncomplete
// if b ends inside it; errInvalid if b does not start with one, or the
// message would exceed wire.MaxDatagram.
func ScanEmitBatch(b []byte) (int, error) {
	var w walker
	return w.scan(b)
}

// walker walks Thrift compact values with an explicit stack, so that a walk
// stopped by missing bytes resumes where it stopped when more arrive: a
// stream fed one byte at a time costs linear time, not quadratic.
type walker struct {
	b      []byte
	off    int // bytes walked: always at a token boundary between calls
	header bool
	stack  []frame
}

// frame is a struct (remaining unused) or a container being walked.
type frame struct {
	container bool
	remaining uint64  // container entries left
	types     [2]byte // element type, or key and value types of a map
	ntypes    int
	next      int // which of types comes next
}

// scan continues the walk over b, which must extend what earlier calls saw.
func (w *walker) scan(b []byte) (int, error) {
	w.b = b
	if !w.header {
		if err := w.readHeader(); err != nil {
			w.off = 0
			return 0, err
		}
		w.header = true
		w.stack = append(w.stack[:0], frame{}) // the arguments struct
	}
	for len(w.stack) > 0 {
		off, depth, top := w.off, len(w.stack), w.stack[len(w.stack)-1]
		if err := w.token(); err != nil {
			if errors.Is(err, errIncomplete) { // undo the partial token
				w.off, w.stack = off, w.stack[:depth]
				w.stack[depth-1] = top
			}
			return 0, err
		}
	}
	return w.off, nil
}

// token walks one field or container entry; a struct or container it
// starts is pushed, to be walked by the next tokens.
func (w *walker) token() error {
	top := &w.stack[len(w.stack)-1]
	if top.container {
		if top.remaining == 0 {
			w.stack = w.stack[:len(w.stack)-1]
			return nil
		}
		typ := top.types[top.next]
		if top.next++; top.next == top.ntypes {
			top.next = 0
			top.remaining--
		}
		return w.value(typ)
	}
	h, err := w.byte()
	if err != nil {
		return err
	}
	typ := h & 0x0f
	if typ == tStop {
		if h != 0 {
			return errInvalid
		}
		w.stack = w.stack[:len(w.stack)-1]
		return nil
	}
	if h>>4 == 0 { // long form: the field id follows as a zigzag varint
		if _, err := w.varint(3); err != nil {
			return err
		}
	}
	if typ == tTrue || typ == tFalse { // the value is in the type
		return nil
	}
	return w.value(typ)
}

func (w *walker) need(n int) error {
	switch {
	case w.off+n > wire.MaxDatagram:
		return errInvalid
	case w.off+n > len(w.b):
		return errIncomplete
	}
	return nil
}

func (w *walker) byte() (byte, error) {
	if err := w.need(1); err != nil {
		return 0, err
	}
	w.off++
	return w.b[w.off-1], nil
}

// varint reads an unsigned LEB128 of at most maxBytes bytes.
func (w *walker) varint(maxBytes int) (uint64, error) {
	var v uint64
	for i := 0; i < maxBytes; i++ {
		c, err := w.byte()
		if err != nil {
			return 0, err
		}
		v |= uint64(c&0x7f) << (7 * i)
		if c < 0x80 {
			return v, nil
		}
	}
	return 0, errInvalid
}

func (w *walker) skip(n uint64) error {
	if n > wire.MaxDatagram {
		return errInvalid
	}
	if err := w.need(int(n)); err != nil {
		return err
	}
	w.off += int(n)
	return nil
}

func (w *walker) readHeader() error {
	for _, ok := range []func(byte) bool{
		func(c byte) bool { return c == compactProtocolID },
		func(c byte) bool { return c == compactCall || c == compactOneway },
	} {
		c, err := w.byte()
		if err != nil {
			return err
		}
		if !ok(c) {
			return errInvalid
		}
	}
	if _, err := w.varint(5); err != nil { // sequence id
		return err
	}
	n, err := w.varint(5)
	if err != nil {
		return err
	}
	if n != uint64(len(emitBatch)) {
		return errInvalid
	}
	start := w.off
	if err := w.skip(n); err != nil {
		// Compare what is there, so garbage is rejected before it is complete.
		if have := w.b[start:]; errors.Is(err, errIncomplete) && !bytes.HasPrefix([]byte(emitBatch), have) {
			return errInvalid
		}
		return err
	}
	if string(w.b[start:w.off]) != emitBatch {
		return errInvalid
	}
	return nil
}

// Compact protocol type ids.
const (
	tStop, tTrue, tFalse, tByte, tI16, tI32, tI64, tDouble, tBinary, tList, tSet, tMap, tStruct, tUUID = 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13
)

// value walks a value of type typ: a scalar whole, or the header of a
// struct or container, which is pushed.
func (w *walker) value(typ byte) error {
	switch typ {
	case tTrue, tFalse, tByte:
		return w.skip(1)
	case tI16:
		_, err := w.varint(3)
		return err
	case tI32:
		_, err := w.varint(5)
		return err
	case tI64:
		_, err := w.varint(10)
		return err
	case tDouble:
		return w.skip(8)
	case tUUID:
		return w.skip(16)
	case tBinary:
		n, err := w.varint(5)
		if err != nil {
			return err
		}
		return w.skip(n)
	case tList, tSet:
		h, err := w.byte()
		if err != nil {
			return err
		}
		n := uint64(h >> 4)
		if n == 15 {
			if n, err = w.varint(5); err != nil {
				return err
			}
		}
		return w.push(frame{container: true, remaining: n, types: [2]byte{h & 0x0f}, ntypes: 1})
	case tMap:
		n, err := w.varint(5)
		if err != nil || n == 0 {
			return err
		}
		kv, err := w.byte()
		if err != nil {
			return err
		}
		return w.push(frame{container: true, remaining: n, types: [2]byte{kv >> 4, kv & 0x0f}, ntypes: 2})
	case tStruct:
		return w.push(frame{})
	}
	return errInvalid
}

func (w *walker) push(f frame) error {
	if len(w.stack) >= maxDepth || f.remaining > wire.MaxDatagram { // every entry takes a byte
		return errInvalid
	}
	for _, t := range f.types[:f.ntypes] {
		if t == tStop || t > tUUID {
			return errInvalid
		}
	}
	w.stack = append(w.stack, f)
	return nil
}

// BatchSplitter finds whole emitBatch messages in a raw (socat) stream,
// where datagram boundaries were lost: its Split is a bufio.SplitFunc.
// Bytes that do not parse are skipped up to the next message header,
// counted and logged, and never returned.
type BatchSplitter struct {
	w               walker // the walk of the message at the start of data
	log             *slog.Logger
	every           *lograte.Every
	Skipped, Resync atomic.Uint64
	// OnSkip, if set, is told of every run of bytes skipped.
	OnSkip func(n int)
}

// NewBatchSplitter returns a splitter for one stream.
func NewBatchSplitter(log *slog.Logger) *BatchSplitter {
	return &BatchSplitter{log: log, every: lograte.NewEvery(5 * time.Second)}
}

// Split is a bufio.SplitFunc returning one emitBatch message per token.
// Garbage is skipped within the call, so that a message after it is found
// even at the end of the stream (bufio.Scanner stops at EOF after a call
// that skips without a token).
func (s *BatchSplitter) Split(data []byte, atEOF bool) (int, []byte, error) {
	off := 0
	for off < len(data) {
		rest := data[off:]
		// rest starts where the walk left off until a token is returned or
		// bytes are skipped, so the walk resumes.
		n, err := s.w.scan(rest)
		if !errors.Is(err, errIncomplete) || atEOF {
			s.w = walker{stack: s.w.stack[:0]}
		}
		switch {
		case err == nil:
			return off + n, rest[:n], nil
		case errors.Is(err, errIncomplete) && !atEOF:
			return off, nil, nil
		case errors.Is(err, errIncomplete):
			s.skip(len(rest), "stream ended inside a message")
			return len(data), nil, nil
		}
		skip := resync(rest)
		s.skip(skip, "bytes that are not an emitBatch message")
		off += skip
	}
	return off, nil, nil
}

// resync returns how many bytes of b to skip to reach the next plausible
// message header (or a prefix of one at the end of b).
func resync(b []byte) int {
	for i := 1; i < len(b); i++ {
		if b[i] != compactProtocolID {
			continue
		}
		w := walker{b: b[i:]}
		if err := w.readHeader(); err == nil || errors.Is(err, errIncomplete) {
			return i
		}
	}
	return len(b)
}

func (s *BatchSplitter) skip(n int, why string) {
	s.Skipped.Add(uint64(n))
	s.Resync.Add(1)
	if s.OnSkip != nil {
		s.OnSkip(n)
	}
	if ok, suppressed := s.every.Allow(); ok && s.log != nil {
		s.log.Warn("raw stream: skipped "+why, "bytes", n, "skipped_total", s.Skipped.Load(),
			"resyncs_total", s.Resync.Load(), "not_logged", suppressed)
	}
}
