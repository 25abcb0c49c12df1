package jaegerthrift

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"testing"
	"testing/iotest"

	"github.com/katatrace/katatrace/internal/jaegertest"
	"github.com/opentracing/opentracing-go"
)

func TestScanRealBatches(t *testing.T) {
	for name, emit := range map[string]func(opentracing.Tracer){"small": jaegertest.SmallTrace, "big": jaegertest.BigTrace} {
		t.Run(name, func(t *testing.T) {
			got := jaegertest.Capture(t, "svc", emit)
			if len(got) == 0 {
				t.Fatal("the client sent nothing")
			}
			spans := 0
			for _, p := range got {
				n, err := ScanEmitBatch(p)
				if err != nil || n != len(p) {
					t.Fatalf("ScanEmitBatch = %d, %v; want %d", n, err, len(p))
				}
				// Every cut short is incomplete, never invalid or complete.
				for _, i := range []int{1, 2, 5, 13, len(p) / 2, len(p) - 1} {
					if _, err := ScanEmitBatch(p[:i]); !errors.Is(err, errIncomplete) {
						t.Fatalf("prefix of %d/%d bytes: %v", i, len(p), err)
					}
				}
				b, err := DecodeEmitBatch(p)
				if err != nil {
					t.Fatal(err)
				}
				spans += len(b.Spans)
			}
			if name == "small" && spans != 4 {
				t.Fatalf("%d spans, want 4", spans)
			}
			if name == "big" && (spans != 41 || len(got) < 2 || maxLen(got) < 20000) {
				t.Fatalf("%d spans in %d batches of up to %d bytes", spans, len(got), maxLen(got))
			}
		})
	}
}

func maxLen(ps [][]byte) int {
	m := 0
	for _, p := range ps {
		m = max(m, len(p))
	}
	return m
}

var scanTests = []struct {
	name string
	in   []byte
	want error
}{
	{"empty", nil, errIncomplete},
	{"protocol id only", []byte{0x82}, errIncomplete},
	{"wrong protocol", []byte{0x80, 0x01, 0, 9}, errInvalid},
	{"reply type", []byte{0x82, 0x41, 0, 9}, errInvalid},
	{"call type", append(append([]byte{0x82, 0x21, 0x01, 9}, "emitBatch"...), 0), nil},
	{"other method", append([]byte{0x82, 0x81, 0, 15}, "emitZipkinBatch"...), errInvalid},
	{"name cut", append([]byte{0x82, 0x81, 0, 9}, "emitB"...), errIncomplete},
	{"name wrong early", append([]byte{0x82, 0x81, 0, 9}, "emitX"...), errInvalid},
	{"empty args", append(append([]byte{0x82, 0x81, 0x7f, 9}, "emitBatch"...), 0), nil},
	{"long seq id", append(append([]byte{0x82, 0x81, 0xff, 0xff, 0x03, 9}, "emitBatch"...), 0), nil},
	{"seq id too long", []byte{0x82, 0x81, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, errInvalid},
	{"bad stop", append(append([]byte{0x82, 0x81, 0, 9}, "emitBatch"...), 0xf0), errInvalid},
	{"huge list", append(append([]byte{0x82, 0x81, 0, 9}, "emitBatch"...), 0x19, 0xf8, 0xff, 0xff, 0xff, 0x0f), errInvalid},
	{"huge string", append(append([]byte{0x82, 0x81, 0, 9}, "emitBatch"...), 0x18, 0xff, 0xff, 0x7f), errInvalid},
	{"deep nesting", append(append([]byte{0x82, 0x81, 0, 9}, "emitBatch"...), bytes.Repeat([]byte{0x1c}, 40)...), errInvalid},
	{"bad type", append(append([]byte{0x82, 0x81, 0, 9}, "emitBatch"...), 0x1e), errInvalid},
}

func TestScanTable(t *testing.T) {
	for _, tt := range scanTests {
		t.Run(tt.name, func(t *testing.T) {
			n, err := ScanEmitBatch(tt.in)
			if !errors.Is(err, tt.want) || (err == nil && n != len(tt.in)) {
				t.Fatalf("ScanEmitBatch = %d, %v; want %v", n, err, tt.want)
			}
		})
	}
}

// TestSplitterRepairsStream: datagrams merged and cut by a stream, with
// garbage between, come out whole; the garbage is counted, never returned.
func TestSplitterRepairsStream(t *testing.T) {
	dgs := jaegertest.Capture(t, "svc", func(tr opentracing.Tracer) {
		for range 5 {
			jaegertest.SmallTrace(tr)
			jaegertest.BigTrace(tr)
		}
	})
	garbage := [][]byte{[]byte("junk"), {0x82, 0x81, 0x00}, bytes.Repeat([]byte{0x82}, 7), []byte("\x82\x81\x00\x09emitBatch\x1e")}
	// Garbage first, so the stream's last message follows garbage too.
	dgs = append(dgs[len(dgs)-1:], dgs[:len(dgs)-1]...)
	var stream []byte
	junk := 0
	for i, p := range dgs {
		stream = append(stream, p...)
		if i%3 == 1 {
			g := garbage[i%len(garbage)]
			stream = append(stream, g...)
			junk += len(g)
		}
	}
	for name, r := range map[string]io.Reader{
		"whole":       bytes.NewReader(stream),
		"byte a time": iotest.OneByteReader(bytes.NewReader(stream)),
		"8 KiB reads": &chunkReader{b: stream, n: 8192},
	} {
		t.Run(name, func(t *testing.T) {
			sp := NewBatchSplitter(nil)
			sc := bufio.NewScanner(r)
			sc.Buffer(make([]byte, 0, 256<<10), 256<<10)
			sc.Split(sp.Split)
			i := 0
			for sc.Scan() {
				if i >= len(dgs) || !bytes.Equal(sc.Bytes(), dgs[i]) {
					t.Fatalf("token %d (%d bytes) is not datagram %d", i, len(sc.Bytes()), i)
				}
				i++
			}
			if sc.Err() != nil || i != len(dgs) {
				t.Fatalf("got %d of %d datagrams, err %v", i, len(dgs), sc.Err())
			}
			if int(sp.Skipped.Load()) != junk {
				t.Fatalf("skipped %d bytes, want %d", sp.Skipped.Load(), junk)
			}
		})
	}
}

type chunkReader struct {
	b []byte
	n int
}

func (c *chunkReader) Read(p []byte) (int, error) {
	if len(c.b) == 0 {
		return 0, io.EOF
	}
	n := copy(p[:min(len(p), c.n)], c.b)
	c.b = c.b[n:]
	return n, nil
}

func FuzzScanEmitBatch(f *testing.F) {
	for _, tt := range scanTests {
		f.Add(tt.in)
	}
	for _, p := range jaegertest.Capture(f, "svc", jaegertest.SmallTrace) {
		f.Add(p)
		f.Add(append(append([]byte("junk"), p...), p[:len(p)/2]...))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		n, err := ScanEmitBatch(in)
		if err == nil {
			if n <= 0 || n > len(in) || n > 65535 {
				t.Fatalf("length %d of %d", n, len(in))
			}
			if m, err := ScanEmitBatch(in[:n]); err != nil || m != n {
				t.Fatalf("rescan of the message: %d, %v", m, err)
			}
		}
		// The splitter always makes progress and returns only messages.
		sp := NewBatchSplitter(nil)
		sc := bufio.NewScanner(bytes.NewReader(in))
		sc.Buffer(make([]byte, 0, 256<<10), 256<<10)
		sc.Split(sp.Split)
		total := 0
		for sc.Scan() {
			if m, err := ScanEmitBatch(sc.Bytes()); err != nil || m != len(sc.Bytes()) {
				t.Fatalf("splitter returned a non-message: %v", err)
			}
			total += len(sc.Bytes())
		}
		if sc.Err() != nil || total+int(sp.Skipped.Load()) != len(in) {
			t.Fatalf("tokens %d + skipped %d != %d bytes (err %v)", total, sp.Skipped.Load(), len(in), sc.Err())
		}
	})
}

func BenchmarkScanEmitBatch(b *testing.B) {
	dgs := jaegertest.Capture(b, "svc", jaegertest.BigTrace)
	p := dgs[0]
	b.SetBytes(int64(len(p)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ScanEmitBatch(p); err != nil {
			b.Fatal(err)
		}
	}
}

// TestSplitterFindsMessageAfterGarbageAtEOF: a stream that ends with
// garbage then a whole message yields the message, though bufio.Scanner
// stops at EOF after any call that returns no token.
func TestSplitterFindsMessageAfterGarbageAtEOF(t *testing.T) {
	msg := jaegertest.Capture(t, "svc", jaegertest.SmallTrace)[0]
	stream := append([]byte("garbage\x82\x82"), msg...)
	sp := NewBatchSplitter(nil)
	// EOF comes with the data, so the first call already has atEOF set.
	sc := bufio.NewScanner(iotest.DataErrReader(bytes.NewReader(stream)))
	sc.Split(sp.Split)
	if !sc.Scan() || !bytes.Equal(sc.Bytes(), msg) {
		t.Fatalf("message after garbage lost at EOF (err %v)", sc.Err())
	}
	if sp.Skipped.Load() != 9 {
		t.Fatalf("skipped %d, want 9", sp.Skipped.Load())
	}
}
