package kataspan

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"testing/iotest"
)

// stream reads a capture's bytes.
func stream(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name+".bin"))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// frame is one frame of payload p.
func frame(p []byte) []byte { return append(binary.BigEndian.AppendUint64(nil, uint64(len(p))), p...) }

// readAll reads every frame of r to its end, copied.
func readAll(t testing.TB, r *Reader) ([][]byte, error) {
	t.Helper()
	var out [][]byte
	for {
		p, err := r.Next()
		if err != nil {
			return out, err
		}
		out = append(out, bytes.Clone(p))
	}
}

// TestReaderFramesInEveryCut: whole frames whatever the reads' sizes.
func TestReaderFramesInEveryCut(t *testing.T) {
	for _, name := range captures {
		b := stream(t, name)
		want := frames(t, b)
		for _, chunk := range []int{1, 7, 8, 9, 100, len(b)} {
			var src io.Reader = &chunkReader{b: b, n: chunk}
			if chunk == 1 {
				src = iotest.OneByteReader(bytes.NewReader(b))
			}
			got, err := readAll(t, NewReader(src, 1<<20))
			if err != io.EOF || !reflect.DeepEqual(got, want) {
				t.Fatalf("%s in reads of %d: %d frames, %v", name, chunk, len(got), err)
			}
		}
	}
}

// TestReaderSkips: what cannot be returned is skipped and counted, and the
// frames after it come through.
func TestReaderSkips(t *testing.T) {
	json := frames(t, stream(t, "json-otel017-api"))
	bin := frames(t, stream(t, "bincode-otel014-api"))
	const max = 4096
	big := append([]byte(jsonStart), bytes.Repeat([]byte("x"), 3*max)...) // a span's beginning, too large
	bigBincode := longName(t, bin[0], 3*max)
	junk := bytes.Repeat([]byte{0xff}, 3*max)
	for _, tc := range []struct {
		name   string
		in     []byte
		want   [][]byte
		skip   Skipped
		eofErr error
	}{
		{"junk frame within the limit is returned", cat(frame([]byte("no span")), frame(json[0])),
			[][]byte{[]byte("no span"), json[0]}, Skipped{}, io.EOF},
		{"oversize JSON span read through", cat(frame(json[0]), frame(big), frame(json[1])),
			[][]byte{json[0], json[1]}, Skipped{Oversize: 1, Bytes: uint64(8 + len(big))}, io.EOF},
		{"oversize bincode span read through", cat(frame(bin[0]), frame(bigBincode), frame(bin[1])),
			[][]byte{bin[0], bin[1]}, Skipped{Oversize: 1, Bytes: uint64(8 + len(bigBincode))}, io.EOF},
		{"oversize junk: framing lost, next frame found", cat(frame(json[0]), frame(junk), frame(json[1])),
			[][]byte{json[0], json[1]}, Skipped{Resyncs: 1, Bytes: uint64(8 + len(junk))}, io.EOF},
		{"implausible length: framing lost, next frame found", cat(frame(bin[0]), binary.BigEndian.AppendUint64(nil, 1<<50), []byte("garbage"), frame(bin[1])),
			[][]byte{bin[0], bin[1]}, Skipped{Resyncs: 1, Bytes: 8 + 7}, io.EOF},
		{"end inside a frame", cat(frame(json[0]), frame(json[1])[:100]),
			[][]byte{json[0]}, Skipped{Bytes: 100}, io.ErrUnexpectedEOF},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, chunk := range []int{1, 5, 4096, len(tc.in)} {
				r := NewReader(&chunkReader{b: tc.in, n: chunk}, max)
				got, err := readAll(t, r)
				if err != tc.eofErr || !reflect.DeepEqual(got, tc.want) || r.Skipped() != tc.skip {
					t.Fatalf("reads of %d: %d frames (want %d), %v, skipped %+v (want %+v)", chunk, len(got), len(tc.want), err, r.Skipped(), tc.skip)
				}
			}
		})
	}
}

func cat(bs ...[]byte) []byte { return bytes.Join(bs, nil) }

// longName is bincode span p with a name of n bytes.
func longName(t *testing.T, p []byte, n int) []byte {
	const at = 16 + 8 + 1 + 1 + 1 + 8 + 4 // the name's length, after a context without trace state
	if p[16+8+1+1] != 0 {
		t.Fatal("the span has a trace state")
	}
	old := int(binary.LittleEndian.Uint64(p[at:]))
	return cat(p[:at], binary.LittleEndian.AppendUint64(nil, uint64(n)), bytes.Repeat([]byte("x"), n), p[at+8+old:])
}

// TestReaderFindsFramesFromAnyByte: a stream taken up at any byte (after a
// crash) yields exactly the frames that begin at or after that byte, never
// a false one, and counts what it passed.
func TestReaderFindsFramesFromAnyByte(t *testing.T) {
	for _, name := range captures {
		t.Run(name, func(t *testing.T) {
			b := stream(t, name)
			all := frames(t, b)
			var starts []int
			for i, at := 0, 0; i < len(all); i++ {
				starts = append(starts, at)
				at += 8 + len(all[i])
			}
			for k := range len(b) {
				first := len(all)
				for i, s := range starts {
					if s >= k {
						first = i
						break
					}
				}
				r := NewReader(&chunkReader{b: b[k:], n: 1000}, 1<<20)
				r.Lose()
				got, err := readAll(t, r)
				if len(got) != len(all)-first || len(got) > 0 && !reflect.DeepEqual(got, all[first:]) {
					t.Fatalf("from byte %d: %d frames, want the %d from frame %d on (%v)", k, len(got), len(all)-first, first, err)
				}
				skipped := len(b) - k
				if first < len(all) {
					skipped = starts[first] - k
				}
				if s := r.Skipped(); s.Bytes != uint64(skipped) || s.Resyncs != 1 {
					t.Fatalf("from byte %d: skipped %+v, want %d bytes", k, s, skipped)
				}
			}
		})
	}
}

// TestReaderDrop: a frame given up half-way is skipped as the rest comes,
// and its memory let go.
func TestReaderDrop(t *testing.T) {
	json := frames(t, stream(t, "json-otel017-api"))
	in := cat(frame(json[0]), frame(json[1]), frame(json[2]))
	cut := 8 + len(json[0]) + 8 + 50
	src := &gate{b: in, open: cut}
	r := NewReader(src, 1<<20)
	if p, err := r.Next(); err != nil || !bytes.Equal(p, json[0]) {
		t.Fatalf("first frame: %v", err)
	}
	if _, err := r.Next(); !errors.Is(err, errStalled) || !r.InFrame() {
		t.Fatalf("the stalled frame: %v, in frame %v", err, r.InFrame())
	}
	if !r.Drop() || r.InFrame() || r.buf != nil {
		t.Fatal("Drop kept the frame")
	}
	src.open = len(in)
	p, err := r.Next()
	if err != nil || !bytes.Equal(p, json[2]) {
		t.Fatalf("after the drop: %q, %v; want the third frame", p, err)
	}
	if s := r.Skipped(); s.Stalled != 1 || s.Bytes != uint64(8+len(json[1])) {
		t.Fatalf("skipped %+v", s)
	}
}

var errStalled = errors.New("stalled")

// gate reads b up to open, then fails with errStalled (a deadline).
type gate struct {
	b    []byte
	at   int
	open int
}

func (g *gate) Read(p []byte) (int, error) {
	if g.at >= len(g.b) {
		return 0, io.EOF
	}
	if g.at >= g.open {
		return 0, errStalled
	}
	n := copy(p, g.b[g.at:g.open])
	g.at += n
	return n, nil
}

// TestReaderState: a reader stopped anywhere hands a successor what it
// needs to go on: every frame comes out once, in order.
func TestReaderState(t *testing.T) {
	json := frames(t, stream(t, "json-otel017-api"))
	big := append([]byte(jsonStart), bytes.Repeat([]byte("x"), 5000)...)
	in := cat(frame(json[0]), frame(big), frame(json[1]), frame(json[2]))
	want := [][]byte{json[0], json[1], json[2]}
	for cut := range len(in) {
		src := &gate{b: in, open: cut}
		r := NewReader(src, 4096)
		got, err := readAll(t, r)
		if cut < len(in) && !errors.Is(err, errStalled) {
			t.Fatalf("cut at %d: %v", cut, err)
		}
		next := NewReader(bytes.NewReader(in[src.at:]), 4096)
		if err := next.Restore(r.State()); err != nil {
			t.Fatal(err)
		}
		rest, err := readAll(t, next)
		if err != io.EOF || !reflect.DeepEqual(append(got, rest...), want) {
			t.Fatalf("cut at %d: %d frames before, %d after (%v)", cut, len(got), len(rest), err)
		}
	}
	for _, bad := range [][]byte{nil, {9, 0, 0, 0, 0, 0, 0, 0, 0, 0}, {stateVersion, 2, 0, 0, 0, 0, 0, 0, 0, 0}, append([]byte{stateVersion, 0}, bytes.Repeat([]byte{0xff}, 8)...)} {
		if err := NewReader(nil, 4096).Restore(bad); err == nil {
			t.Errorf("Restore(% x) took it", bad)
		}
	}
}

// FuzzReader: any stream, framed or taken up anywhere, yields payloads
// within the limit, each what a header announced; never a panic.
func FuzzReader(f *testing.F) {
	for _, name := range captures {
		b := stream(f, name)
		f.Add(b[:min(len(b), 3000)], false)
		f.Add(b[17:min(len(b), 3000)], true)
	}
	f.Add(cat(frame([]byte("x")), binary.BigEndian.AppendUint64(nil, 1<<40)), false)
	f.Add(cat(binary.BigEndian.AppendUint64(nil, 5000), []byte(jsonStart)), false)
	f.Fuzz(func(t *testing.T, in []byte, lost bool) {
		const limit = 4096
		r := NewReader(&chunkReader{b: in, n: 33}, limit)
		if lost {
			r.Lose()
		}
		for {
			p, err := r.Next()
			if err != nil {
				if err != io.EOF && err != io.ErrUnexpectedEOF {
					t.Fatalf("error %v", err)
				}
				break
			}
			if len(p) > limit || !bytes.Contains(in, frame(p)) {
				t.Fatalf("a payload of %d bytes that no header announced", len(p))
			}
		}
		if s := r.Skipped(); s.Bytes > uint64(len(in)) && s.Oversize+s.Stalled == 0 {
			t.Fatalf("skipped %d bytes of %d", s.Bytes, len(in))
		}
	})
}

// FuzzReaderRestore: any state a predecessor could hand over (or bytes
// that are none) is refused or taken up, and the stream after it reads on
// without a panic or a payload beyond the limit.
func FuzzReaderRestore(f *testing.F) {
	json := frames(f, stream(f, "json-otel017-api"))
	in := cat(frame(json[0]), frame(json[1]))
	for _, cut := range []int{0, 5, 8, 100, len(in) - 1} {
		r := NewReader(&gate{b: in, open: cut}, 4096)
		_, _ = readAll(f, r)
		f.Add(r.State(), in[cut:])
	}
	f.Add([]byte{stateVersion, 1, 0, 0, 0, 0, 0, 0, 0, 9}, in)
	f.Fuzz(func(t *testing.T, state, rest []byte) {
		const limit = 4096
		r := NewReader(bytes.NewReader(rest), limit)
		if err := r.Restore(state); err != nil {
			return
		}
		for {
			p, err := r.Next()
			if err != nil {
				return
			}
			if len(p) > limit {
				t.Fatalf("a payload of %d bytes", len(p))
			}
		}
	})
}

// TestReaderOnWait: the wait for a frame's rest is told as it begins,
// even when the reader was idle before its header came, once a frame;
// while the framing is lost, a candidate that stalls is given up and the
// search goes on.
func TestReaderOnWait(t *testing.T) {
	json := frames(t, stream(t, "json-otel017-api"))
	t.Run("a frame begun after a quiet spell", func(t *testing.T) {
		in := cat(frame(json[0]), frame(json[1]), frame(json[2]))
		src := &gate{b: in}
		r := NewReader(src, 1<<20)
		waits := 0
		r.OnWait(func() { waits++ })
		if _, err := r.Next(); !errors.Is(err, errStalled) || waits != 0 {
			t.Fatalf("idle: %v, %d waits told", err, waits)
		}
		src.open = 8 + len(json[0]) + 8 + 10 // one frame, and the next begun
		if p, err := r.Next(); err != nil || !bytes.Equal(p, json[0]) || waits != 0 {
			t.Fatalf("the first frame: %v, %d waits", err, waits)
		}
		if _, err := r.Next(); !errors.Is(err, errStalled) || waits != 1 {
			t.Fatalf("the second frame stalled: %v, %d waits told, want 1", err, waits)
		}
		if _, err := r.Next(); !errors.Is(err, errStalled) || waits != 1 {
			t.Fatalf("still waiting for the same frame: %d waits told", waits)
		}
		if !r.Drop() {
			t.Fatal("nothing to drop")
		}
		src.open = len(in)
		if p, err := r.Next(); err != nil || !bytes.Equal(p, json[2]) {
			t.Fatalf("after the drop: %v", err)
		}
	})
	t.Run("a false candidate that stalls, the framing lost", func(t *testing.T) {
		// Junk, then what looks like a JSON frame's beginning that never
		// ends, then real frames: the search gives the false one up.
		fake := append(binary.BigEndian.AppendUint64(nil, 900), jsonStart...)
		in := cat([]byte("junk"), fake, frame(json[0]), frame(json[1]))
		src := &gate{b: in, open: 4 + len(fake)}
		r := NewReader(src, 1<<20)
		r.Lose()
		waits := 0
		r.OnWait(func() { waits++ })
		if _, err := r.Next(); !errors.Is(err, errStalled) || waits != 1 || !r.InFrame() {
			t.Fatalf("the candidate: %v, %d waits", err, waits)
		}
		if !r.Drop() {
			t.Fatal("the candidate was not given up")
		}
		src.open = len(in)
		// Given up, the false length no longer holds the real frames
		// behind it until 900 bytes come.
		got, err := readAll(t, r)
		if err != io.EOF {
			t.Fatal(err)
		}
		if len(got) != 2 || !bytes.Equal(got[0], json[0]) || r.Skipped().Stalled != 0 {
			t.Fatalf("after giving the candidate up: %d frames, skipped %+v", len(got), r.Skipped())
		}
	})
}

// countingMemory is a Memory that counts the room it gave and got back.
type countingMemory struct{ gets, puts, out, most int }

func (m *countingMemory) Get(n int) ([]byte, error) {
	m.gets++
	m.out += n
	m.most = max(m.most, m.out)
	return make([]byte, n), nil
}

func (m *countingMemory) Put(b []byte) {
	m.puts++
	m.out -= cap(b)
}

// TestReaderTakesRoomPerFrame: a frame larger than the reader's own
// buffer is read into room taken for it alone (nothing after it is read
// into it), and the room is given back once the frame was returned, when
// a stalled frame is dropped, and at Close; small frames take none.
func TestReaderTakesRoomPerFrame(t *testing.T) {
	json := frames(t, stream(t, "json-otel017-api"))
	big := bytes.Repeat([]byte{7}, 40000)
	in := cat(frame(json[0]), frame(big), frame(json[1]), frame(big), frame(json[2]))
	mem := &countingMemory{}
	r := NewReader(&chunkReader{b: in, n: 5000}, 1<<20)
	r.SetMemory(mem)
	want := [][]byte{json[0], big, json[1], big, json[2]}
	for i, w := range want {
		p, err := r.Next()
		if err != nil || !bytes.Equal(p, w) {
			t.Fatalf("frame %d: %d bytes: %v", i, len(p), err)
		}
		if len(w) == len(big) && mem.out != HeaderSize+len(big) {
			t.Fatalf("frame %d read with room %d, want its own size %d", i, mem.out, HeaderSize+len(big))
		}
	}
	if mem.gets != 2 || mem.most != HeaderSize+len(big) || mem.out != 0 {
		t.Fatalf("room: %+v", *mem)
	}

	// A frame that stalls gives its room back when dropped; one cut by
	// the stream's end at Close.
	g := &gate{b: cat(frame(big), frame(json[0])), open: 20000}
	r = NewReader(g, 1<<20)
	r.SetMemory(mem)
	r.OnWait(func() {})
	if _, err := r.Next(); err == nil {
		t.Fatal("a frame half sent was returned")
	}
	if mem.out == 0 || !r.Drop() || mem.out != 0 {
		t.Fatalf("a dropped frame's room: %+v", *mem)
	}
	r = NewReader(&gate{b: frame(big), open: 20000}, 1<<20)
	r.SetMemory(mem)
	_, _ = r.Next()
	r.Close()
	if mem.out != 0 || mem.gets != mem.puts {
		t.Fatalf("room at Close: %+v", *mem)
	}
}

// strictMemory is a Memory that refuses to give room while any is out:
// a reader must give back what it holds before it waits for more.
type strictMemory struct{ out int }

func (m *strictMemory) Get(n int) ([]byte, error) {
	if m.out > 0 {
		return nil, fmt.Errorf("room asked for while %d bytes are held", m.out)
	}
	m.out = n
	return make([]byte, n), nil
}

func (m *strictMemory) Put(b []byte) { m.out -= cap(b) }

// TestReaderGivesRoomBackBeforeAskingMore: with the framing lost, a large
// candidate read into room turns out to be none, and the next candidate
// found inside it is larger still: its room is asked for only once the
// first was given back.
func TestReaderGivesRoomBackBeforeAskingMore(t *testing.T) {
	json := frames(t, stream(t, "json-otel017-api"))
	inner := cat(binary.BigEndian.AppendUint64(nil, 300000), []byte(jsonStart)) // a candidate that never ends
	outer := cat([]byte(jsonStart), bytes.Repeat([]byte("y"), 30000), inner, bytes.Repeat([]byte("z"), 30000))
	in := cat(binary.BigEndian.AppendUint64(nil, uint64(len(outer))), outer, make([]byte, 300000), frame(json[0]))
	r := NewReader(&chunkReader{b: in, n: 7000}, 1<<20)
	mem := &strictMemory{}
	r.SetMemory(mem)
	r.Lose()
	for {
		p, err := r.Next()
		if err != nil {
			t.Fatalf("the frame after the false candidates: %v", err)
		}
		if bytes.Equal(p, json[0]) {
			break
		}
	}
}
