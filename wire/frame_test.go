package wire

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

func hello(k Kind) []byte { return AppendHello(nil, k) }

func frames(ps ...[]byte) []byte {
	var b []byte
	for _, p := range ps {
		b = AppendFrame(b, p)
	}
	return b
}

func join(bs ...[]byte) []byte { return bytes.Join(bs, nil) }

var frameTests = []struct {
	name   string
	in     []byte
	framed bool
	kind   Kind
	want   [][]byte // payloads; an empty one is a flush request
	err    string   // of the hello or the last Next: "EOF", "unexpected EOF", or a protocol error
}{
	{name: "one datagram", in: join(hello(KindJaeger), frames([]byte("abc"))), framed: true, kind: KindJaeger, want: [][]byte{[]byte("abc")}, err: "EOF"},
	{name: "flush", in: join(hello(KindText), frames([]byte("a"), nil, []byte("b"))), framed: true, kind: KindText, want: [][]byte{[]byte("a"), {}, []byte("b")}, err: "EOF"},
	{name: "largest", in: join(hello(KindJaeger), frames(bytes.Repeat([]byte{7}, MaxDatagram))), framed: true, kind: KindJaeger, want: [][]byte{bytes.Repeat([]byte{7}, MaxDatagram)}, err: "EOF"},
	{name: "too large", in: join(hello(KindJaeger), []byte{0, 1, 0, 0}), framed: true, kind: KindJaeger, err: "frame length 65536 exceeds"},
	{name: "1 GiB prefix", in: join(hello(KindJaeger), []byte{0x40, 0, 0, 0}, []byte("junk")), framed: true, kind: KindJaeger, err: "frame length 1073741824 exceeds"},
	{name: "cut in header", in: join(hello(KindJaeger), []byte{0, 0}), framed: true, kind: KindJaeger, err: "unexpected EOF"},
	{name: "cut in payload", in: join(hello(KindJaeger), []byte{0, 0, 0, 9}, []byte("abc")), framed: true, kind: KindJaeger, err: "unexpected EOF"},
	{name: "bad version", in: []byte("KTRC\x03\x01\x00\x00"), err: "protocol version 3"},
	{name: "v2", in: join(AppendHelloV2(nil, KindJaeger, 7, 42), frames([]byte("a")), AppendSeq(nil, 50), frames([]byte("b"), nil)), framed: true, kind: KindJaeger,
		want: [][]byte{[]byte("a"), binary.BigEndian.AppendUint64(nil, 50), []byte("b"), {}}, err: "EOF"},
	{name: "short v2 hello", in: AppendHelloV2(nil, KindText, 1, 1)[:20], err: "inside the 24-byte hello"},
	{name: "v1 has no control frames", in: join(hello(KindJaeger), AppendSeq(nil, 5)), framed: true, kind: KindJaeger, err: "frame length 2147483656 exceeds"},
	{name: "bad kind", in: []byte("KTRC\x01\x07\x00\x00"), err: "unknown stream kind 0x07"},
	{name: "bad reserved", in: []byte("KTRC\x01\x01\x00\x01"), err: "reserved bytes"},
	{name: "short hello", in: []byte("KTRC\x01"), err: "inside the 8-byte hello"},
	{name: "raw", in: []byte("\x82\x81\x01\x09emitBatch"), framed: false},
	{name: "raw that starts like the magic", in: []byte("KTRX..."), framed: false},
	{name: "raw short", in: []byte("KT"), framed: false},
	{name: "empty", in: nil, err: "EOF"},
}

func TestFrames(t *testing.T) {
	for _, tt := range frameTests {
		for _, slow := range []bool{false, true} {
			name := tt.name
			if slow {
				name += "/one byte per read"
			}
			t.Run(name, func(t *testing.T) {
				var r io.Reader = bytes.NewReader(tt.in)
				if slow {
					r = iotest.OneByteReader(r)
				}
				br := NewStreamReader(r)
				h, framed, err := ReadHello(br)
				if err != nil || !framed {
					if framed != tt.framed || !matches(err, tt.err) {
						t.Fatalf("ReadHello = %+v, %v, %v; want framed %v, error %q", h, framed, err, tt.framed, tt.err)
					}
					if !framed && err == nil {
						rest, _ := io.ReadAll(br)
						if !bytes.Equal(rest, tt.in) {
							t.Fatalf("raw stream lost bytes: %q", rest)
						}
					}
					return
				}
				if h.Kind != tt.kind {
					t.Fatalf("kind = %v, want %v", h.Kind, tt.kind)
				}
				if h.Version == Version2 && (h.Session != 7 || h.First != 42) {
					t.Fatalf("v2 hello = %+v, want session 7, first 42", h)
				}
				fr := NewFrameReader(br)
				fr.Control = h.Version == Version2
				var got [][]byte
				for {
					p, _, err := fr.NextFrame()
					if err != nil {
						if !matches(err, tt.err) {
							t.Fatalf("Next error = %v, want %q", err, tt.err)
						}
						break
					}
					got = append(got, append([]byte{}, p...))
				}
				if len(got) != len(tt.want) {
					t.Fatalf("got %d frames, want %d", len(got), len(tt.want))
				}
				for i := range got {
					if !bytes.Equal(got[i], tt.want[i]) {
						t.Fatalf("frame %d differs", i)
					}
				}
			})
		}
	}
}

func matches(err error, want string) bool {
	switch want {
	case "":
		return err == nil
	case "EOF":
		return errors.Is(err, io.EOF)
	case "unexpected EOF":
		return errors.Is(err, io.ErrUnexpectedEOF)
	}
	return IsProtocolError(err) && strings.Contains(err.Error(), want)
}

// FuzzFrameReader feeds arbitrary streams to the host's decoder: it must
// never panic, never return more than MaxDatagram, and every payload it
// returns must be exactly what the stream's frame held.
func FuzzFrameReader(f *testing.F) {
	for _, tt := range frameTests {
		f.Add(tt.in)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		br := NewStreamReader(bytes.NewReader(in))
		h, framed, err := ReadHello(br)
		if err != nil || !framed {
			return
		}
		fr := NewFrameReader(br)
		fr.Control = h.Version == Version2
		off := HelloSize
		if fr.Control {
			off += HelloV2Extra
		}
		for {
			p, _, err := fr.NextFrame()
			if err != nil {
				if !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) && !IsProtocolError(err) {
					t.Fatalf("unexpected error %v", err)
				}
				return
			}
			if len(p) > MaxDatagram || !bytes.Equal(p, in[off+4:off+4+len(p)]) {
				t.Fatalf("frame at %d decoded wrong", off)
			}
			off += 4 + len(p)
		}
	})
}

func TestReadHelloDoesNotWaitForRawPeer(t *testing.T) {
	// A raw peer sends 2 bytes and then nothing: the decision must come from
	// those 2 bytes, not wait for a full hello.
	pr, pw := io.Pipe()
	defer pw.Close()
	go pw.Write([]byte("<1"))
	br := bufio.NewReaderSize(pr, 2*MaxFrameSize)
	_, framed, err := ReadHello(br)
	if err != nil || framed {
		t.Fatalf("ReadHello = %v, %v; want raw", framed, err)
	}
}

func BenchmarkFrameReader(b *testing.B) {
	for _, size := range []int{64, 1024, 60000} {
		b.Run(fmt.Sprint(size), func(b *testing.B) {
			one := AppendFrame(nil, make([]byte, size))
			stream := bytes.Repeat(one, max(1, (1<<20)/len(one)))
			r := bytes.NewReader(stream)
			br := NewStreamReader(r)
			fr := NewFrameReader(br)
			b.SetBytes(int64(size))
			b.ReportAllocs()
			for b.Loop() {
				if _, _, err := fr.NextFrame(); err == io.EOF {
					r.Reset(stream)
					br.Reset(r)
					if _, _, err := fr.NextFrame(); err != nil {
						b.Fatal(err)
					}
				}
			}
		})
	}
}
