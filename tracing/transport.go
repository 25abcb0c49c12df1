package tracing

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync/atomic"
	"time"

	"github.com/katatrace/katatrace/endpoint"
	"github.com/katatrace/katatrace/guestrelay"
	"github.com/katatrace/katatrace/wire"
	"github.com/uber/jaeger-client-go"
	"github.com/uber/jaeger-client-go/thrift"
	"github.com/uber/jaeger-client-go/thrift-gen/agent"
	j "github.com/uber/jaeger-client-go/thrift-gen/jaeger"
)

// emitBatchOverhead is what an emitBatch message adds around its spans, as
// jaeger-client-go reckons it.
const emitBatchOverhead = 70

// Transport is a jaeger-client-go Transport that hands each batch, encoded
// exactly as the UDP transport would send it, to a function instead of a
// UDP socket: onto a relay's queue in the agent shim, or onto a stream to
// the host in any Go agent (see DialTransport). Like every Transport, it is
// used by one goroutine at a time (the reporter's, or under the shim's
// reporter's lock).
type Transport struct {
	send      func([]byte)
	maxSpans  int // bytes of spans a batch may carry
	buf       *thrift.TMemoryBuffer
	proto     thrift.TProtocol
	client    *agent.AgentClient
	process   *j.Process
	procSize  int
	spans     []*j.Span
	size      int
	closeHook func() error
	// holding keeps flushed spans in held until release is set (see
	// Hold); only the transport's user reads and writes them.
	holding bool
	held    []*j.Span
	release atomic.Pointer[Labels]
	labels  Labels // once released, for the spans that come after
}

// Labels rename a held session's spans once released: the service name,
// and the value of their "source" tag. Empty ones leave them as they are.
type Labels struct{ Service, Source string }

// maxHeld bounds the spans a held Transport keeps: past it they are
// released as they are.
const maxHeld = 10000

var errSpanTooLarge = errors.New("span too large to send in one datagram")

// NewTransport encodes batches of at most maxPacket bytes (65000 when 0, as
// jaeger-client-go's UDP transport) and passes each to send, which must not
// keep the slice.
func NewTransport(send func([]byte), maxPacket int) *Transport {
	if maxPacket <= 0 || maxPacket > wire.MaxDatagram {
		maxPacket = 65000
	}
	buf := thrift.NewTMemoryBufferLen(maxPacket)
	compact := thrift.NewTCompactProtocolFactoryConf(&thrift.TConfiguration{})
	return &Transport{
		send: send, maxSpans: maxPacket - emitBatchOverhead,
		buf: buf, proto: compact.GetProtocol(buf), client: agent.NewAgentClientFactory(buf, compact),
	}
}

func (t *Transport) sizeOf(s thrift.TStruct) int {
	t.buf.Reset()
	_ = s.Write(context.Background(), t.proto)
	return t.buf.Len()
}

// Append adds a span, flushing first when it would not fit in the batch.
func (t *Transport) Append(span *jaeger.Span) (int, error) {
	if t.process == nil {
		t.process = jaeger.BuildJaegerProcessThrift(span)
		t.procSize = t.sizeOf(t.process)
		t.size = t.procSize
	}
	js := jaeger.BuildJaegerThrift(span)
	relabel(js, t.labels)
	n := t.sizeOf(js)
	if n > t.maxSpans-t.procSize {
		return 1, errSpanTooLarge // the reporter counts it as failed
	}
	flushed := 0
	var err error
	if t.size+n > t.maxSpans {
		flushed, err = t.Flush()
	}
	t.spans = append(t.spans, js)
	t.size += n
	return flushed, err
}

// Hold keeps every batch, unsent, until Release: the shim's spans wait
// until it knows whether they are the agent's only trace. Call it before
// the first span.
func (t *Transport) Hold() { t.holding = true }

// Release sends what was held, and from then on what comes, renamed by l;
// the first call decides, later ones do nothing. Safe from any goroutine:
// the next flush (the next span, or the close) sends.
func (t *Transport) Release(l Labels) bool { return t.release.CompareAndSwap(nil, &l) }

// Flush encodes the buffered spans as one emitBatch and sends it (or,
// held, keeps them).
func (t *Transport) Flush() (int, error) {
	if t.holding {
		return t.flushHeld()
	}
	return t.emit()
}

// flushHeld keeps the buffered spans until a release, then sends them all
// relabelled, in batches as they fit.
func (t *Transport) flushHeld() (int, error) {
	n := len(t.spans)
	t.held = append(t.held, t.spans...)
	t.spans, t.size = t.spans[:0], t.procSize
	if len(t.held) > maxHeld {
		t.Release(Labels{})
	}
	l := t.release.Load()
	if l == nil {
		return n, nil
	}
	t.holding = false
	if l.Service != "" && t.process != nil {
		t.process.ServiceName = l.Service
		t.procSize = t.sizeOf(t.process)
	}
	held := t.held
	t.held = nil
	t.size = t.procSize
	t.labels = *l
	var err error
	for _, js := range held {
		relabel(js, *l)
		m := t.sizeOf(js)
		if t.size+m > t.maxSpans && len(t.spans) > 0 {
			_, e := t.emit()
			err = errors.Join(err, e)
		}
		t.spans = append(t.spans, js)
		t.size += m
	}
	_, e := t.emit()
	return n, errors.Join(err, e)
}

// relabel sets a span's source tag to l's.
func relabel(js *j.Span, l Labels) {
	if l.Source == "" {
		return
	}
	for _, tag := range js.Tags {
		if tag.Key == "source" && tag.VStr != nil {
			src := l.Source
			tag.VStr = &src
		}
	}
}

// emit encodes the buffered spans as one emitBatch and sends it.
func (t *Transport) emit() (int, error) {
	n := len(t.spans)
	if n == 0 {
		return 0, nil
	}
	t.buf.Reset()
	err := t.client.EmitBatch(context.Background(), &j.Batch{Process: t.process, Spans: t.spans})
	t.spans = t.spans[:0]
	t.size = t.procSize
	if err != nil {
		return n, fmt.Errorf("encode batch: %w", err)
	}
	t.send(t.buf.Bytes())
	return n, nil
}

// Close flushes, then runs the close hook (DialTransport's drain).
func (t *Transport) Close() error {
	_, err := t.Flush()
	if t.closeHook != nil {
		err = errors.Join(err, t.closeHook())
	}
	return err
}

// DialTransport returns a Transport that sends batches over a stream to a
// katatrace host relay (vsock://2:6831 from a guest, or unix:// and tcp://),
// in wire protocol v2 (numbered datagrams, confirmed by the host and resent
// after a reconnect), through a bounded queue that survives the host's
// absence. Close flushes and waits, at most flushTimeout, for the host to
// confirm every batch; what it could not is in its error, and logged
// (nil log: slog's default), since a jaeger-client-go reporter discards
// the error of its transport's Close.
func DialTransport(to endpoint.Addr, queueBytes int, flushTimeout time.Duration, log *slog.Logger) *Transport {
	if log == nil {
		log = slog.Default()
	}
	r := guestrelay.StartRelay(guestrelay.Config{
		Kind:       wire.KindJaeger,
		Dial:       func(ctx context.Context) (net.Conn, error) { return endpoint.Dial(ctx, to) },
		Target:     to.String(),
		QueueBytes: queueBytes,
		BackoffMax: 5 * time.Second,
		Logger:     log,
	}, nil, 0)
	t := NewTransport(r.Send, 0)
	t.closeHook = func() error {
		ctx, cancel := context.WithTimeout(context.Background(), flushTimeout)
		defer cancel()
		err := r.Shutdown(ctx)
		if err != nil {
			log.Error("tracing: spans not confirmed by the host at close", "target", to.String(),
				"flush_timeout", flushTimeout.String(), "err", err)
		}
		return err
	}
	return t
}
