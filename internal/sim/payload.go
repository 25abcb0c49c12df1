package sim

import (
	"bytes"
	"encoding/binary"
	"math/rand/v2"
	"sync"

	"github.com/katatrace/katatrace/wire"
)

// A datagram of the simulation carries its id in its first 8 bytes (the
// guest's number in the top byte), then bytes of noise from a place the
// id picks: one cut short, merged or mixed up shows.

func datagramID(guest int, n uint64) uint64 { return uint64(guest+1)<<56 | n }

// noise is the datagrams' filling.
var noise = func() []byte {
	b := make([]byte, 1<<17)
	r := rand.New(rand.NewPCG(1, 2))
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}()

func fill(id uint64, n int) []byte {
	off := int(id*2654435761) & (1<<16 - 1)
	return noise[off : off+n]
}

// makeDatagram makes datagram id, size bytes long, in a buffer that
// release takes back once the datagram was copied (a run makes many).
func makeDatagram(id uint64, size int) []byte {
	pool := &small
	if size > smallSize {
		pool = &large
	}
	p := (*pool.Get().(*[]byte))[:max(size, 8)]
	binary.BigEndian.PutUint64(p, id)
	copy(p[8:], fill(id, len(p)-8))
	return p
}

func release(p []byte) {
	p = p[:cap(p)]
	switch cap(p) {
	case smallSize:
		small.Put(&p)
	case wire.MaxDatagram + 1:
		large.Put(&p)
	}
}

const smallSize = 2048

var (
	small = sync.Pool{New: func() any { b := make([]byte, smallSize); return &b }}
	large = sync.Pool{New: func() any { b := make([]byte, wire.MaxDatagram+1); return &b }}
)

// idOf is a datagram's id (0 for one too short to carry it).
func idOf(p []byte) uint64 {
	if len(p) < 8 {
		return 0
	}
	return binary.BigEndian.Uint64(p)
}

// intact reports whether p is a whole datagram of the simulation, size
// bytes long.
func intact(p []byte, size int) bool {
	return len(p) == size && len(p) >= 8 && bytes.Equal(p[8:], fill(idOf(p), len(p)-8))
}
