package hostrelay

import (
	"bufio"
	"errors"
	"io"
)

// scanner cuts a raw stream into messages with a split function, as
// bufio.Scanner does, but keeps what it read and did not cut (Rest) for a
// successor, and may be called again after a read's error (a deadline):
// a host relay stops a raw connection anywhere and hands it over.
type scanner struct {
	r     io.Reader
	split bufio.SplitFunc
	max   int
	buf   []byte
	start int
	end   int
	tok   []byte
	err   error // a read's error that came with bytes, for the next read
	eof   bool
}

// scanBuffer is a raw connection's read buffer to begin with.
const scanBuffer = 64 << 10

func newScanner(r io.Reader, split bufio.SplitFunc, limit int, rest []byte) *scanner {
	s := &scanner{r: r, split: split, max: limit, buf: make([]byte, max(min(limit, scanBuffer), len(rest)))}
	s.end = copy(s.buf, rest)
	return s
}

var errTooLong = errors.New("raw message longer than the limit")

// Scan cuts the next message (Bytes), or returns the error that stops it:
// io.EOF at the end, the split's own, or a read's, after which Scan may be
// called again.
func (s *scanner) Scan() error {
	for {
		if s.end > s.start || s.eof {
			adv, tok, err := s.split(s.buf[s.start:s.end], s.eof)
			if err != nil {
				return err
			}
			if adv < 0 || adv > s.end-s.start {
				return errors.New("raw split: advance out of range")
			}
			s.start += adv
			if tok != nil {
				s.tok = tok
				return nil
			}
			if s.eof && adv == 0 {
				return io.EOF
			}
			if adv > 0 {
				continue
			}
		}
		if err := s.fill(); err != nil {
			if err == io.EOF {
				s.eof = true
				continue
			}
			return err
		}
	}
}

// Bytes is the message Scan cut, valid until the next Scan.
func (s *scanner) Bytes() []byte { return s.tok }

// Rest is what was read and not yet cut.
func (s *scanner) Rest() []byte { return s.buf[s.start:s.end] }

func (s *scanner) fill() error {
	if s.err != nil {
		err := s.err
		s.err = nil
		return err
	}
	if s.start > 0 {
		copy(s.buf, s.buf[s.start:s.end])
		s.end -= s.start
		s.start = 0
	}
	if s.end == len(s.buf) {
		if len(s.buf) >= s.max {
			return errTooLong
		}
		buf := make([]byte, min(2*len(s.buf), s.max))
		copy(buf, s.buf[:s.end])
		s.buf = buf
	}
	n, err := s.r.Read(s.buf[s.end:])
	s.end += n
	if n > 0 {
		s.err = err
		return nil
	}
	if err == nil {
		err = io.ErrNoProgress
	}
	return err
}
