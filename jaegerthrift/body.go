package jaegerthrift

import (
	"context"
	"encoding/binary"
	"errors"

	"github.com/uber/jaeger-client-go/thrift"
	"github.com/uber/jaeger-client-go/thrift-gen/jaeger"
)

// Body is a Jaeger collector request body (a Thrift binary Batch: its
// Process, then its spans) that says where its parts lie, so that batches
// of one process join into one request by their bytes, decoded once.
//
// The layout is Thrift binary's, fixed for a Batch of two fields: the
// Process field's header (3 bytes), the Process, the spans field's and
// list's headers (3 + 5 bytes), the spans, the struct's stop (1 byte).
type Body struct {
	Bytes []byte
	// ProcessEnd is where the Process ends: Bytes[3:ProcessEnd].
	ProcessEnd int
	Spans      int // how many
}

// Thrift binary's type ids and the sizes of the headers around a Batch's
// fields.
const (
	binStruct = 12
	binList   = 15
	// fieldHeader is a field's type and id; listHeader the list's element
	// type and length.
	fieldHeader = 3
	listHeader  = 5
)

// EncodeBody encodes b as the Jaeger collector's HTTP endpoint takes it
// (Thrift binary), without the client's SeqNo and Stats: those are
// numbers a Jaeger agent reports about its clients, which a collector
// does not read, and which mean nothing for batches joined.
func EncodeBody(b *jaeger.Batch) (Body, error) {
	if b.Process == nil {
		return Body{}, errors.New("no process")
	}
	buf := thrift.NewTMemoryBufferLen(1024)
	p := thrift.NewTBinaryProtocolConf(buf, &thrift.TConfiguration{}) // writes straight into buf
	ctx := context.Background()
	buf.Write([]byte{binStruct, 0, 1})
	if err := b.Process.Write(ctx, p); err != nil {
		return Body{}, err
	}
	end := buf.Len()
	buf.Write([]byte{binList, 0, 2, binStruct})
	buf.Write(binary.BigEndian.AppendUint32(nil, uint32(len(b.Spans))))
	for _, s := range b.Spans {
		if err := s.Write(ctx, p); err != nil {
			return Body{}, err
		}
	}
	buf.WriteByte(0) // the Batch's stop
	return Body{Bytes: buf.Bytes(), ProcessEnd: end, Spans: len(b.Spans)}, nil
}

// Process is the body's Process, encoded.
func (b Body) Process() []byte { return b.Bytes[fieldHeader:b.ProcessEnd] }

// SpanBytes are the body's spans, encoded one after the other.
func (b Body) SpanBytes() []byte {
	return b.Bytes[b.ProcessEnd+fieldHeader+listHeader : len(b.Bytes)-1]
}

// JoinedSize is the size of the body joining bodies of one process with
// spans bytes of spans in all.
func JoinedSize(process, spans int) int {
	return fieldHeader + process + fieldHeader + listHeader + spans + 1
}

// Join makes the body holding the spans of bodies, in order, which share
// the first's Process (the caller checks that).
func Join(bodies []Body) []byte {
	proc := bodies[0].Process()
	size, n := 0, 0
	for _, b := range bodies {
		size += len(b.SpanBytes())
		n += b.Spans
	}
	out := make([]byte, 0, JoinedSize(len(proc), size))
	out = append(out, binStruct, 0, 1)
	out = append(out, proc...)
	out = append(out, binList, 0, 2, binStruct)
	out = binary.BigEndian.AppendUint32(out, uint32(n))
	for _, b := range bodies {
		out = append(out, b.SpanBytes()...)
	}
	return append(out, 0)
}
