package hostrelay

import (
	"bufio"
	"errors"
	"io"

	"github.com/katatrace/katatrace/hold"
)

// scanner cuts a raw stream into messages with a split function, as
// bufio.Scanner does, but keeps what it read and did not cut (Rest) for a
// successor, and may be called again after a read's error (a deadline):
// a host relay stops a raw connection anywhere and hands it over. Its
// buffer beyond the reader's own is room from the guest's share.
type scanner struct {
	br    *hold.Reader
	split bufio.SplitFunc
	max   int
	tok   []byte
	eof   bool
}

func newScanner(br *hold.Reader, split bufio.SplitFunc, limit int) *scanner {
	return &scanner{br: br, split: split, max: limit}
}

var errTooLong = errors.New("raw message longer than the limit")

// Scan cuts the next message (Bytes), or returns the error that stops it:
// io.EOF at the end, the split's own, or a read's, after which Scan may be
// called again.
func (s *scanner) Scan() error {
	for {
		if have := s.br.Buffered(); have > 0 || s.eof {
			b, _ := s.br.Peek(have)
			adv, tok, err := s.split(b, s.eof)
			if err != nil {
				return err
			}
			if adv < 0 || adv > have {
				return errors.New("raw split: advance out of range")
			}
			_, _ = s.br.Discard(adv)
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
		have := s.br.Buffered()
		if have >= s.max {
			return errTooLong
		}
		// One read more: the split decides whether it is enough.
		if _, err := s.br.Peek(have + 1); err != nil {
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
func (s *scanner) Rest() []byte {
	b, _ := s.br.Peek(s.br.Buffered())
	return b
}
